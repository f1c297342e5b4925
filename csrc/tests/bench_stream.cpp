// csrc/tests/bench_stream.cpp — the CPU stream and the aisp_perturb inner loop timed in C++, without
// Python, pybind or allocation overheads: what the fused kernels themselves reach on this CPU.
//
// Build and run from the repository root, with the flags of the just-in-time build (-march=native)
// or of the ahead-of-time build (drop -march=native: its avx2 path is plain AVX2 + FMA, no AVX-512VL):
//   g++ -O3 -fopenmp -fno-math-errno -ffp-contract=fast -march=native -Icsrc/cpu -Icsrc/include
//       csrc/tests/bench_stream.cpp csrc/cpu/stream_simd.cpp -o /tmp/bench_stream && /tmp/bench_stream
//
// Prints, per SIMD path, the best of 200 repetitions over `rows` rows of `d` normals (default 32 x
// 2048, one AISP decode step), one thread:
//   stream          randn_range into an L1 buffer;
//   stream+perturb  the same, then aisp_perturb's consume loop over the buffer (out = h + u + sigma*eps,
//                   udot += u.eps): the op's code before perturb_range;
//   op-loops+udot   the same with aisp_perturb.cpp's two loops (out, then udot) as the op ran them
//                   before perturb_range;
//   fused           perturb_range (normals from registers into out; no udot): the op without udot;
//   fused+udot      perturb_range writing eps to the buffer too, then the udot loop over it: the op
//                   with udot.
// and checks that out and udot of the fused forms equal the consume loop's bit for bit (exit 1 if not).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "stream_simd.h"

using fastalign::cpu::Isa;

namespace {
volatile float g_keep;  // the results are used, so nothing is optimised away
}

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 32;
  const int64_t d = argc > 2 ? std::atoll(argv[2]) : 2048;
  std::vector<float> h(rows * d), u(d), out(rows * d), out_ref(rows * d), udot(rows), udot_ref(rows);
  for (int64_t i = 0; i < rows * d; ++i) h[i] = 0.001f * static_cast<float>((i * 7919) % 2001) - 1.0f;
  for (int64_t j = 0; j < d; ++j) u[j] = 0.0003f * static_cast<float>((j * 104729) % 1001) - 0.15f;
  std::vector<float> scratch(fastalign::cpu::randn_scratch_size(d));
  const int64_t tau = 64, step = 5;
  const float sigma = 0.5f;
  const Isa best = fastalign::cpu::best_isa();
  int mismatches = 0;
  for (int isa = 0; isa <= static_cast<int>(best); ++isa) {
    fastalign::cpu::set_isa(static_cast<Isa>(isa));
    double best_gen = 1e9, best_old = 1e9, best_op_old = 1e9, best_fused = 1e9, best_fused_udot = 1e9;
    float sink = 0.0f;
    for (int rep = 0; rep < 200; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t r = 0; r < rows; ++r)
        sink += fastalign::cpu::randn_range(7, (r * tau + step) * d, d, scratch.data())[0];
      const auto t1 = std::chrono::steady_clock::now();
      for (int64_t r = 0; r < rows; ++r) {
        const float* eps = fastalign::cpu::randn_range(7, (r * tau + step) * d, d, scratch.data());
        const float* hr = h.data() + r * d;
        float* o = out_ref.data() + r * d;
        float part = 0.0f;
#pragma omp simd reduction(+ : part)
        for (int64_t j = 0; j < d; ++j) {
          o[j] = hr[j] + u[j] + sigma * eps[j];
          part += u[j] * eps[j];
        }
        udot_ref[r] = part;
      }
      const auto t2 = std::chrono::steady_clock::now();
      for (int64_t r = 0; r < rows; ++r) {  // aisp_perturb.cpp's loops before perturb_range (float32)
        const float* eps = fastalign::cpu::randn_range(7, (r * tau + step) * d, d, scratch.data());
        const float* hr = h.data() + r * d;
        float* o = out_ref.data() + r * d;
#pragma omp simd
        for (int64_t j = 0; j < d; ++j) o[j] = hr[j] + u[j] + sigma * eps[j];
        float part = 0.0f;
#pragma omp simd reduction(+ : part)
        for (int64_t j = 0; j < d; ++j) part += u[j] * eps[j];
        udot_ref[r] = part;
      }
      const auto t2b = std::chrono::steady_clock::now();
      for (int64_t r = 0; r < rows; ++r)
        fastalign::cpu::perturb_range(7, (r * tau + step) * d, d, h.data() + r * d, u.data(), sigma,
                                      fastalign::cpu::kBuildFusesMulAdd, out.data() + r * d, nullptr);
      const auto t3 = std::chrono::steady_clock::now();
      if (rep == 0 && std::memcmp(out.data(), out_ref.data(), sizeof(float) * rows * d) != 0) {
        std::printf("%s: fused out differs from the consume loop's\n", fastalign::cpu::isa_name(static_cast<Isa>(isa)));
        ++mismatches;
      }
      sink += out[rep % (rows * d)];
      const auto t4 = std::chrono::steady_clock::now();
      for (int64_t r = 0; r < rows; ++r) {
        fastalign::cpu::perturb_range(7, (r * tau + step) * d, d, h.data() + r * d, u.data(), sigma,
                                      fastalign::cpu::kBuildFusesMulAdd, out.data() + r * d, scratch.data());
        const float* eps = scratch.data();
        float part = 0.0f;
#pragma omp simd reduction(+ : part)
        for (int64_t j = 0; j < d; ++j) part += u[j] * eps[j];
        udot[r] = part;
      }
      const auto t5 = std::chrono::steady_clock::now();
      if (rep == 0 && (std::memcmp(out.data(), out_ref.data(), sizeof(float) * rows * d) != 0 ||
                       std::memcmp(udot.data(), udot_ref.data(), sizeof(float) * rows) != 0)) {
        std::printf("%s: fused+udot out or udot differs from the consume loop's\n",
                    fastalign::cpu::isa_name(static_cast<Isa>(isa)));
        ++mismatches;
      }
      sink += udot[rep % rows];
      best_gen = std::min(best_gen, std::chrono::duration<double>(t1 - t0).count());
      best_old = std::min(best_old, std::chrono::duration<double>(t2 - t1).count());
      best_op_old = std::min(best_op_old, std::chrono::duration<double>(t2b - t2).count());
      best_fused = std::min(best_fused, std::chrono::duration<double>(t3 - t2b).count());
      best_fused_udot = std::min(best_fused_udot, std::chrono::duration<double>(t5 - t4).count());
    }
    g_keep = sink;
    const double n = static_cast<double>(rows * d);
    std::printf("%-8s rows=%lld d=%lld  stream %.1f us (%.3fe9 normals/s)  stream+perturb %.1f us (%.3fe9/s)"
                "  op-loops+udot %.1f us (%.3fe9/s)  fused %.1f us (%.3fe9/s)  fused+udot %.1f us (%.3fe9/s)\n",
                fastalign::cpu::isa_name(static_cast<Isa>(isa)), static_cast<long long>(rows),
                static_cast<long long>(d), best_gen * 1e6, n / best_gen / 1e9, best_old * 1e6, n / best_old / 1e9,
                best_op_old * 1e6, n / best_op_old / 1e9, best_fused * 1e6, n / best_fused / 1e9, best_fused_udot * 1e6, n / best_fused_udot / 1e9);
  }
  return mismatches == 0 ? 0 : 1;
}
