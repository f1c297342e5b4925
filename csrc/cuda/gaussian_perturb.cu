// csrc/cuda/gaussian_perturb.cu — evaluation-point noise with the SEA indexing.
//
//   x, out: [B, N] (N = L*V); out[b, k] = x[b, k] + std * normal(seed[b], step*N + k), step = *step.
//
// The same numbers as sea_step's Langevin noise at the same seed and step. Row b is the contiguous
// stream range [step*N, step*N + N); a thread owns one Philox counter block (4 elements, one vector
// access when N % 4 == 0, masked scalar access at the row ends otherwise).
#include "common.cuh"
#include "launchers.h"

namespace fastalign {
namespace cuda {
namespace {

// grid (ceil(max_blocks / kThreads), min(B, 65535)).
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
gaussian_perturb_kernel(const T* __restrict__ x, T* __restrict__ out, float std_dev,
                        const int64_t* __restrict__ seed, const int64_t* __restrict__ step, int64_t B, int64_t N,
                        bool vec) {
  const int64_t base = *step * N;
  const int64_t first = base >> 2;
  const int64_t num_blocks = ((base + N - 1) >> 2) - first + 1;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const int64_t s = seed[b];
    const T* x_row = x + b * N;
    T* out_row = out + b * N;
    for (int64_t q = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; q < num_blocks; q += stride) {
      float xi[4];
      randn4(s, first + q, xi);
      const int64_t k0 = 4 * (first + q) - base;
      if (vec) {
        float v[4];
        load4(x_row + k0, v);
#pragma unroll
        for (int e = 0; e < 4; ++e) v[e] += std_dev * xi[e];
        store4(out_row + k0, v);
      } else {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t k = k0 + e;
          if (k >= 0 && k < N) store(out_row + k, load(x_row + k) + std_dev * xi[e]);
        }
      }
    }
  }
}

template <typename T>
cudaError_t launch(const void* x, void* out, float std_dev, const int64_t* seed, const int64_t* step, int64_t B,
                   int64_t N, cudaStream_t stream) {
  const bool vec = N % 4 == 0 && aligned4<T>(x) && aligned4<T>(out);
  const int64_t max_blocks = (N + 6) / 4;
  const dim3 grid(static_cast<unsigned>((max_blocks + kThreads - 1) / kThreads),
                  static_cast<unsigned>(B < kMaxGridY ? B : kMaxGridY));
  gaussian_perturb_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(x), static_cast<T*>(out), std_dev,
                                                            seed, step, B, N, vec);
  return cudaGetLastError();
}

}  // namespace

cudaError_t gaussian_perturb(Dtype dtype, const void* x, void* out, float std_dev, const int64_t* seed,
                             const int64_t* step, int64_t B, int64_t N, cudaStream_t stream) {
  if (B == 0 || N == 0) return cudaSuccess;
  switch (dtype) {
    case Dtype::kFloat32: return launch<float>(x, out, std_dev, seed, step, B, N, stream);
    case Dtype::kFloat16: return launch<__half>(x, out, std_dev, seed, step, B, N, stream);
    case Dtype::kBFloat16: return launch<__nv_bfloat16>(x, out, std_dev, seed, step, B, N, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace fastalign
