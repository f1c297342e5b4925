// csrc/cpu/gaussian_perturb.cpp — SEA evaluation-point noise: out[b, k] = x[b, k] + std * normal(seed[b], step*N + k).
//
// The same numbers as sea_step's Langevin noise at the same seed and step. Elementwise, split into
// fixed chunks of each row (never by thread count), noise generated per chunk into an L1 buffer.
#include <ATen/Parallel.h>

#include "dtype.h"
#include "ops.h"
#include "stream_simd.h"

namespace fastalign {
namespace cpu {
namespace {

template <typename scalar_t>
void perturb_all(const scalar_t* x, scalar_t* out, float stdev, const int64_t* seed, int64_t step, int64_t B,
                 int64_t N) {
  const int64_t chunks_per_row = (N + kStreamChunk - 1) / kStreamChunk;
  at::parallel_for(0, B * chunks_per_row, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float scratch[randn_scratch_size(kStreamChunk)];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks_per_row;
      const int64_t e0 = (task % chunks_per_row) * kStreamChunk;
      const int64_t len = std::min(kStreamChunk, N - e0);
      const float* xi = randn_range(seed[b], step * N + e0, len, scratch);
      const scalar_t* xc = x + b * N + e0;
      scalar_t* oc = out + b * N + e0;
#pragma omp simd
      for (int64_t e = 0; e < len; ++e) store(oc, e, load(xc, e) + stdev * xi[e]);
    }
  });
}

}  // namespace

void gaussian_perturb(const at::Tensor& x, at::Tensor& out, double std, const at::Tensor& seed,
                      const at::Tensor& step) {
  const int64_t B = x.size(0), N = x.numel() / std::max<int64_t>(B, 1);
  const int64_t st = scalar_int64(step, "step");
  if (std == 0.0) {
    out.copy_(x);
    return;
  }
  checked_offset(st + 1, N, 0, "gaussian_perturb offset (step * N)");
  FASTALIGN_DISPATCH_STORAGE(x.scalar_type(), "gaussian_perturb", [&] {
    perturb_all<scalar_t>(x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), static_cast<float>(std),
                          seed.data_ptr<int64_t>(), st, B, N);
  });
}

}  // namespace cpu
}  // namespace fastalign
