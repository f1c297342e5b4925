// csrc/tests/bench_stream.cpp — the CPU stream and the aisp_perturb inner loop timed in C++, without
// Python, pybind or allocation overheads: what the fused kernels themselves reach on this CPU.
//
// Build and run from the repository root, with the flags of the just-in-time build:
//   g++ -O3 -fopenmp -fno-math-errno -ffp-contract=fast -march=native -Icsrc/cpu -Icsrc/include \
//       csrc/tests/bench_stream.cpp csrc/cpu/stream_simd.cpp -o /tmp/bench_stream && /tmp/bench_stream
//
// Prints, per SIMD path, the best of 200 repetitions over `rows` rows of `d` normals (default 32 x
// 2048, one AISP decode step): the stream alone (randn_range into an L1 buffer), and the stream
// followed by aisp_perturb's consume loop (out = h + u + sigma*eps, udot += u.eps). One thread.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "stream_simd.h"

using fastalign::cpu::Isa;

int main(int argc, char** argv) {
  const int64_t rows = argc > 1 ? std::atoll(argv[1]) : 32;
  const int64_t d = argc > 2 ? std::atoll(argv[2]) : 2048;
  std::vector<float> h(rows * d, 1.0f), u(d, 0.5f), out(rows * d);
  std::vector<float> scratch(fastalign::cpu::randn_scratch_size(d));
  const int64_t tau = 64, step = 5;
  const Isa best = fastalign::cpu::best_isa();
  for (int isa = 0; isa <= static_cast<int>(best); ++isa) {
    fastalign::cpu::set_isa(static_cast<Isa>(isa));
    double best_gen = 1e9, best_fused = 1e9;
    float sink = 0.0f;
    for (int rep = 0; rep < 200; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t r = 0; r < rows; ++r)
        sink += fastalign::cpu::randn_range(7, (r * tau + step) * d, d, scratch.data())[0];
      const auto t1 = std::chrono::steady_clock::now();
      for (int64_t r = 0; r < rows; ++r) {
        const float* eps = fastalign::cpu::randn_range(7, (r * tau + step) * d, d, scratch.data());
        const float* hr = h.data() + r * d;
        float* o = out.data() + r * d;
        float part = 0.0f;
#pragma omp simd reduction(+ : part)
        for (int64_t j = 0; j < d; ++j) {
          o[j] = hr[j] + u[j] + 0.5f * eps[j];
          part += u[j] * eps[j];
        }
        sink += part;
      }
      const auto t2 = std::chrono::steady_clock::now();
      best_gen = std::min(best_gen, std::chrono::duration<double>(t1 - t0).count());
      best_fused = std::min(best_fused, std::chrono::duration<double>(t2 - t1).count());
    }
    static volatile float keep;  // the results are used, so nothing is optimised away
    keep = sink;
    std::printf("%-8s rows=%lld d=%lld  stream %.1f us (%.3fe9 normals/s)  stream+perturb %.1f us (%.3fe9/s)\n",
                fastalign::cpu::isa_name(static_cast<Isa>(isa)), static_cast<long long>(rows),
                static_cast<long long>(d), best_gen * 1e6, rows * d / best_gen / 1e9, best_fused * 1e6,
                rows * d / best_fused / 1e9);
  }
  return 0;
}
