// csrc/cuda/aisp_perturb.cu — AISP perturbation of the pre-logit states for one decode step.
//
//   h, out: [B, n, d]; u: [B, tau, d] float32; t = *step, it = *iteration (device memory).
//   t < tau:  out[b,i,j] = h[b,i,j] + u[b,t,j] + sigma * eps[b,i,j],
//             eps[b,i,j] = normal(seed[b], ((it*n + i)*tau + t)*d + j)
//             udot[b,i] += sum_j u[b,t,j] * eps[b,i,j]   (if udot given and active[b,i])
//   t >= tau: out = h.
//
// One row (b, i) is a contiguous range [base, base + d) of the stream. A thread owns one counter
// block c of that range (4 consecutive elements, one Philox call); when d % 4 == 0 the blocks line
// up with the row and the access is one vector load/store, otherwise the (at most two) partial
// blocks at the row ends are masked and accessed element by element. With udot, one CTA owns a row
// and reduces u.eps in a fixed order (no atomics), so repeated runs are bit-identical.
#include "common.cuh"
#include "launchers.h"

namespace fastalign {
namespace cuda {
namespace {

template <typename T, bool kUdot>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
aisp_perturb_kernel(const T* __restrict__ h, const float* __restrict__ u, T* __restrict__ out, float sigma,
                    const int64_t* __restrict__ seed, const int64_t* __restrict__ iteration,
                    const int64_t* __restrict__ step, float* __restrict__ udot, const bool* __restrict__ active,
                    int64_t rows, int64_t n, int64_t tau, int64_t d, bool vec) {
  __shared__ float scratch[kWarps];
  const int64_t t = *step;
  const int64_t it = *iteration;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;

  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const T* h_row = h + row * d;
    T* out_row = out + row * d;
    if (t >= tau) {  // past the horizon: z = h (uniform across the grid)
      for (int64_t q = q0; 4 * q < d; q += stride) {
        const int64_t j0 = 4 * q;
        if (vec) {
          float x[4];
          load4(h_row + j0, x);
          store4(out_row + j0, x);
        } else {
          for (int e = 0; e < 4 && j0 + e < d; ++e) out_row[j0 + e] = h_row[j0 + e];
        }
      }
      continue;
    }
    const int64_t b = row / n, i = row - b * n;
    const float* u_row = u + (b * tau + t) * d;
    const int64_t base = ((it * n + i) * tau + t) * d;
    const int64_t first = base >> 2;
    const int64_t num_blocks = ((base + d - 1) >> 2) - first + 1;
    const int64_t s = seed[b];
    float acc = 0.0f;
    for (int64_t q = q0; q < num_blocks; q += stride) {
      float eps[4];
      randn4(s, first + q, eps);
      const int64_t j0 = 4 * (first + q) - base;  // row position of the block's first element
      if (vec) {  // d % 4 == 0: the block is 4 whole, aligned elements of the row
        float x[4], uv[4];
        load4(h_row + j0, x);
        load4(u_row + j0, uv);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          x[e] = x[e] + uv[e] + sigma * eps[e];
          if (kUdot) acc += uv[e] * eps[e];
        }
        store4(out_row + j0, x);
      } else {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t j = j0 + e;
          if (j < 0 || j >= d) continue;
          const float uj = u_row[j];
          store(out_row + j, load(h_row + j) + uj + sigma * eps[e]);
          if (kUdot) acc += uj * eps[e];
        }
      }
    }
    if (kUdot) {  // gridDim.x == 1: this CTA owns the row
      const float total = block_sum(acc, scratch);
      if (threadIdx.x == 0 && (active == nullptr || active[row])) udot[row] += total;
    }
  }
}

template <typename T>
cudaError_t launch(const void* h, const float* u, void* out, float sigma, const int64_t* seed,
                   const int64_t* iteration, const int64_t* step, float* udot, const bool* active, int64_t B,
                   int64_t n, int64_t tau, int64_t d, cudaStream_t stream) {
  const int64_t rows = B * n;
  if (rows == 0 || d == 0) return cudaSuccess;
  const bool vec = d % 4 == 0 && aligned4<T>(h) && aligned4<T>(out) && aligned4<float>(u);
  const int64_t max_blocks = (d + 6) / 4;  // counter blocks a row of d elements can touch
  const dim3 grid(udot ? 1u : static_cast<unsigned>((max_blocks + kThreads - 1) / kThreads),
                  static_cast<unsigned>(rows < kMaxGridY ? rows : kMaxGridY));
  const T* hp = static_cast<const T*>(h);
  T* op = static_cast<T*>(out);
  if (udot) {
    aisp_perturb_kernel<T, true><<<grid, kThreads, 0, stream>>>(hp, u, op, sigma, seed, iteration, step, udot,
                                                                active, rows, n, tau, d, vec);
  } else {
    aisp_perturb_kernel<T, false><<<grid, kThreads, 0, stream>>>(hp, u, op, sigma, seed, iteration, step,
                                                                 nullptr, nullptr, rows, n, tau, d, vec);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t aisp_perturb(Dtype dtype, const void* h, const float* u, void* out, float sigma,
                         const int64_t* seed, const int64_t* iteration, const int64_t* step, float* udot,
                         const bool* active, int64_t B, int64_t n, int64_t tau, int64_t d,
                         cudaStream_t stream) {
  switch (dtype) {
    case Dtype::kFloat32:
      return launch<float>(h, u, out, sigma, seed, iteration, step, udot, active, B, n, tau, d, stream);
    case Dtype::kFloat16:
      return launch<__half>(h, u, out, sigma, seed, iteration, step, udot, active, B, n, tau, d, stream);
    case Dtype::kBFloat16:
      return launch<__nv_bfloat16>(h, u, out, sigma, seed, iteration, step, udot, active, B, n, tau, d, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace fastalign
