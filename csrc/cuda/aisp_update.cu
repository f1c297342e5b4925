// csrc/cuda/aisp_update.cu — the AISP importance-sampling update, without any [B, n, tau, d] noise.
//
// Pass 1 (only when the perturbation did not accumulate udot):
//   udot[b,i] = sum_{t < len[b,i]} sum_j u[b,t,j] * eps[b,i,t,j],  eps = normal(seed[b], ((it*n+i)*tau+t)*d+j)
//   For a fixed rollout (b, i) the stream index is (it*n+i)*tau*d + (t*d + j): the rollout's noise is
//   one contiguous range of length len*d, matched against the flat u[b] (also contiguous). Each row is
//   split over P CTAs (threads own one Philox counter block each); every CTA writes its partial sum
//   and a finalize kernel adds the P partials in a fixed order: deterministic, no float atomics.
// (softmax of the scores runs in fastalign.ops between the passes)
// Pass 2:
//   u_new[b,t,j] = u[b,t,j] + sigma * sum_i w[b,i] * eps[b,i,t,j] * [t < len[b,i]]
//   A thread owns 4 consecutive elements of u[b] and regenerates, for every rollout i, the 4 normals
//   at those positions (one Philox call when tau*d % 4 == 0, else two), summing over i in order.
#include "common.cuh"
#include "launchers.h"

namespace fastalign {
namespace cuda {
namespace {

// grid (P, min(B*n, 65535)): partials[row * P + blockIdx.x] = this CTA's share of udot[row].
__global__ void __launch_bounds__(kThreads, kMinBlocks)
aisp_udot_partial_kernel(const float* __restrict__ u, const int64_t* __restrict__ lengths,
                         const int64_t* __restrict__ seed, const int64_t* __restrict__ iteration,
                         float* __restrict__ partials, int64_t rows, int64_t n, int64_t tau, int64_t d,
                         bool vec) {
  __shared__ float scratch[kWarps];
  const int64_t it = *iteration;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t span = tau * d;  // stream length of one rollout

  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const int64_t b = row / n, i = row - b * n;
    int64_t len = lengths[row];
    len = len < 0 ? 0 : (len > tau ? tau : len);
    const int64_t count = len * d;  // elements of u[b] this rollout was perturbed with
    const float* u_b = u + b * span;
    const int64_t base = (it * n + i) * span;
    const int64_t first = base >> 2;
    const int64_t num_blocks = count > 0 ? ((base + count - 1) >> 2) - first + 1 : 0;
    const int64_t s = seed[b];
    float acc = 0.0f;
    for (int64_t q = q0; q < num_blocks; q += stride) {
      float eps[4];
      randn4(s, first + q, eps);
      const int64_t j0 = 4 * (first + q) - base;
      if (vec && j0 + 4 <= count) {  // span % 4 == 0: blocks align with u[b]
        float uv[4];
        load4(u_b + j0, uv);
#pragma unroll
        for (int e = 0; e < 4; ++e) acc += uv[e] * eps[e];
      } else {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t j = j0 + e;
          if (j >= 0 && j < count) acc += u_b[j] * eps[e];
        }
      }
    }
    const float total = block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[row * gridDim.x + blockIdx.x] = total;
  }
}

// grid (min(B*n, 65535)), one warp per row: udot_out[row] = sum of the row's partials, fixed order.
__global__ void __launch_bounds__(32)
aisp_udot_finalize_kernel(const float* __restrict__ partials, float* __restrict__ udot_out, int64_t rows,
                          int num_partials) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float total = warp_sum_partials(partials, row, num_partials);
    if (threadIdx.x == 0) udot_out[row] = total;
  }
}

// grid (ceil(tau*d / 4 / kThreads), min(B, 65535)): thread owns u[b, 4q .. 4q+4).
__global__ void __launch_bounds__(kThreads, kMinBlocks)
aisp_apply_kernel(const float* __restrict__ u, const float* __restrict__ weights,
                  const int64_t* __restrict__ lengths, float* __restrict__ out, float sigma,
                  const int64_t* __restrict__ seed, const int64_t* __restrict__ iteration, int64_t B, int64_t n,
                  int64_t tau, int64_t d, bool vec) {
  const int64_t it = *iteration;
  const int64_t span = tau * d;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const float* u_b = u + b * span;
    float* out_b = out + b * span;
    const int64_t s = seed[b];
    for (int64_t q = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; 4 * q < span; q += stride) {
      const int64_t j0 = 4 * q;
      // element j0 + e (horizon step (j0 + e) / d) belongs to rollout i's noise iff j0 + e < len_i * d;
      // the 4 elements may straddle a step boundary when d % 4 != 0
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t i = 0; i < n; ++i) {
        const int64_t limit = lengths[b * n + i] * d;
        if (j0 >= limit) continue;  // none of the 4 elements
        const float w = weights[b * n + i];
        float eps[4];
        randn4_at(s, (it * n + i) * span + j0, eps);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (j0 + e < limit) acc[e] += w * eps[e];
        }
      }
      if (vec) {  // span % 4 == 0 and aligned pointers: 4 whole elements
        float x[4];
        load4(u_b + j0, x);
#pragma unroll
        for (int e = 0; e < 4; ++e) x[e] += sigma * acc[e];
        store4(out_b + j0, x);
      } else {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (j0 + e < span) out_b[j0 + e] = u_b[j0 + e] + sigma * acc[e];
        }
      }
    }
  }
}

}  // namespace

cudaError_t aisp_udot(const float* u, const int64_t* lengths, float* udot_out, const int64_t* seed,
                      const int64_t* iteration, float* partials, int64_t B, int64_t n, int64_t tau,
                      int64_t d, int num_sms, cudaStream_t stream) {
  const int64_t rows = B * n;
  if (rows == 0) return cudaSuccess;
  const int num_partials = reduction_partials(rows, tau * d, num_sms);
  const bool vec = (tau * d) % 4 == 0 && aligned4<float>(u);
  const unsigned grid_rows = static_cast<unsigned>(rows < kMaxGridY ? rows : kMaxGridY);
  aisp_udot_partial_kernel<<<dim3(num_partials, grid_rows), kThreads, 0, stream>>>(
      u, lengths, seed, iteration, partials, rows, n, tau, d, vec);
  aisp_udot_finalize_kernel<<<grid_rows, 32, 0, stream>>>(partials, udot_out, rows, num_partials);
  return cudaGetLastError();
}

cudaError_t aisp_apply(const float* u, const float* weights, const int64_t* lengths, float* out, float sigma,
                       const int64_t* seed, const int64_t* iteration, int64_t B, int64_t n, int64_t tau,
                       int64_t d, cudaStream_t stream) {
  const int64_t span = tau * d;
  if (B == 0 || span == 0) return cudaSuccess;
  const bool vec = span % 4 == 0 && aligned4<float>(u) && aligned4<float>(out);
  const int64_t quads = (span + 3) / 4;
  const dim3 grid(static_cast<unsigned>((quads + kThreads - 1) / kThreads),
                  static_cast<unsigned>(B < kMaxGridY ? B : kMaxGridY));
  aisp_apply_kernel<<<grid, kThreads, 0, stream>>>(u, weights, lengths, out, sigma, seed, iteration, B, n, tau,
                                                   d, vec);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fastalign
