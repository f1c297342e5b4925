// csrc/tests/bench_stream.cpp — the CPU stream and the aisp_perturb inner loop timed in C++, without
// Python, pybind or allocation overheads: what the fused kernels themselves reach on this CPU.
//
// Build and run from the repository root, with the flags of the just-in-time build (-march=native)
// or of the ahead-of-time build (drop -march=native: its avx2 path is then the plain AVX2 + FMA code,
// no AVX-512VL encodings, the path an AVX2-only CPU runs):
//   g++ -O3 -fopenmp -fno-math-errno -ffp-contract=fast -march=native -Icsrc/cpu -Icsrc/include
//       csrc/tests/bench_stream.cpp csrc/cpu/stream_simd.cpp -o /tmp/bench_stream && /tmp/bench_stream
// Add -DFA_NO_PERTURB_RANGE to build it against a stream_simd.cpp from before perturb_range (commit
// 430e951 and older): the fused forms are then left out. bench/ab_bench_stream.py runs binaries in turn.
//
// Prints, per SIMD path, the best of 200 repetitions over `rows` rows of `d` normals (default 32 x
// 2048, one AISP decode step), one thread, for each form (microseconds and normals/s):
//   stream          randn_range into an L1 buffer;
//   stream+perturb  the same, then one loop out = h + u + sigma*eps, udot += u.eps (the form of the
//                   earlier RESULTS tables; not the op's code);
//   op-loops        aisp_perturb.cpp's float32 code before perturb_range, without udot: randn_range,
//                   then the out loop;
//   op-loops+udot   the same, then its udot loop;
//   fused           perturb_range (normals from registers into out): the op's code now, without udot;
//   fused+udot      perturb_range writing eps to the buffer too, then the udot loop over it: the op's
//                   code now, with udot.
// The fused forms' out and udot are checked bit for bit against op-loops+udot (exit 1 if they differ).
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
  auto k0 = [&](int64_t r) { return (r * tau + step) * d; };
  auto udot_loop = [&](const float* eps) {
    float part = 0.0f;
#pragma omp simd reduction(+ : part)
    for (int64_t j = 0; j < d; ++j) part += u[j] * eps[j];
    return part;
  };
  auto op_loops = [&](bool with_udot) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* eps = fastalign::cpu::randn_range(7, k0(r), d, scratch.data());
      const float* hr = h.data() + r * d;
      float* o = out_ref.data() + r * d;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) o[j] = hr[j] + u[j] + sigma * eps[j];
      if (with_udot) udot_ref[r] = udot_loop(eps);
    }
  };
  struct Form { const char* name; double best; };
  Form forms[] = {{"stream", 1e9}, {"stream+perturb", 1e9}, {"op-loops", 1e9}, {"op-loops+udot", 1e9},
                  {"fused", 1e9}, {"fused+udot", 1e9}};
#if defined(FA_NO_PERTURB_RANGE)
  const int nforms = 4;
#else
  const int nforms = 6;
#endif
  const Isa best = fastalign::cpu::best_isa();
  int mismatches = 0;
  for (int isa = 0; isa <= static_cast<int>(best); ++isa) {
    fastalign::cpu::set_isa(static_cast<Isa>(isa));
    for (Form& f : forms) f.best = 1e9;
    float sink = 0.0f;
    for (int rep = 0; rep < 200; ++rep) {
      for (int f = 0; f < nforms; ++f) {
        const auto t0 = std::chrono::steady_clock::now();
        switch (f) {
          case 0:
            for (int64_t r = 0; r < rows; ++r) sink += fastalign::cpu::randn_range(7, k0(r), d, scratch.data())[0];
            break;
          case 1:
            for (int64_t r = 0; r < rows; ++r) {
              const float* eps = fastalign::cpu::randn_range(7, k0(r), d, scratch.data());
              const float* hr = h.data() + r * d;
              float* o = out.data() + r * d;
              float part = 0.0f;
#pragma omp simd reduction(+ : part)
              for (int64_t j = 0; j < d; ++j) {
                o[j] = hr[j] + u[j] + sigma * eps[j];
                part += u[j] * eps[j];
              }
              sink += part;
            }
            break;
          case 2: op_loops(false); break;
          case 3: op_loops(true); break;
#if !defined(FA_NO_PERTURB_RANGE)
          case 4:
            for (int64_t r = 0; r < rows; ++r)
              fastalign::cpu::perturb_range(7, k0(r), d, h.data() + r * d, u.data(), sigma,
                                            fastalign::cpu::kBuildFusesMulAdd, out.data() + r * d, nullptr);
            break;
          case 5:
            for (int64_t r = 0; r < rows; ++r) {
              fastalign::cpu::perturb_range(7, k0(r), d, h.data() + r * d, u.data(), sigma,
                                            fastalign::cpu::kBuildFusesMulAdd, out.data() + r * d, scratch.data());
              udot[r] = udot_loop(scratch.data());
            }
            break;
#endif
        }
        const auto t1 = std::chrono::steady_clock::now();
        forms[f].best = std::min(forms[f].best, std::chrono::duration<double>(t1 - t0).count());
        if (f >= 4 && rep == 0 &&
            (std::memcmp(out.data(), out_ref.data(), sizeof(float) * rows * d) != 0 ||
             (f == 5 && std::memcmp(udot.data(), udot_ref.data(), sizeof(float) * rows) != 0))) {
          std::printf("%s: %s gives another out or udot than op-loops+udot\n",
                      fastalign::cpu::isa_name(static_cast<Isa>(isa)), forms[f].name);
          ++mismatches;
        }
        sink += out[rep % (rows * d)] + out_ref[rep % (rows * d)] + udot[rep % rows];
      }
    }
    g_keep = sink;
    const double n = static_cast<double>(rows * d);
    std::printf("%-8s rows=%lld d=%lld ", fastalign::cpu::isa_name(static_cast<Isa>(isa)),
                static_cast<long long>(rows), static_cast<long long>(d));
    for (int f = 0; f < nforms; ++f)
      std::printf(" %s %.1f us (%.3fe9/s)", forms[f].name, forms[f].best * 1e6, n / forms[f].best / 1e9);
    std::printf("\n");
  }
  return mismatches == 0 ? 0 : 1;
}
