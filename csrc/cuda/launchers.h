// csrc/cuda/launchers.h — host launchers of the CUDA kernels (raw pointers, no torch).
//
// Every launcher enqueues its kernels on `stream` and returns cudaGetLastError(); nothing syncs the
// host and nothing allocates, so a call can be captured in a CUDA graph. Seeds ([B] int64) and the
// iteration / step counters ([1] int64) are read by the kernels from device memory. Scratch memory for
// the deterministic two-pass reductions is passed in by the caller (sized with reduction_partials).
//
// Storage tensors are contiguous; `Dtype` names their element type. Math is float32.
#pragma once

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "fastalign/clip.h"

namespace fastalign {
namespace cuda {

enum class Dtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Clip group of sea_step: fastalign/clip.h (one table with fastalign/_clip.py).
using ::fastalign::ClipGroup;

// How many CTAs (partials) the first pass of a two-pass reduction uses per row: enough CTAs in total
// to fill the GPU (4 per SM), but at least ~4 vectors of 4 elements per thread, at most 1024.
// A pure function of the shape and the SM count, so a given GPU always reduces in the same order.
inline int reduction_partials(int64_t rows, int64_t row_len, int num_sms) {
  const int64_t per_cta = 256 * 16;  // elements one CTA should at least cover
  int64_t by_work = (row_len + per_cta - 1) / per_cta;
  int64_t by_fill = (4 * static_cast<int64_t>(num_sms) + rows - 1) / (rows > 0 ? rows : 1);
  int64_t p = by_work < by_fill ? by_work : by_fill;
  if (p < 1) p = 1;
  if (p > 1024) p = 1024;
  return static_cast<int>(p);
}

// AISP perturbation for decode step *step (docs/design.md#ops):
//   h, out: [B, n, d] (dtype); u: [B, tau, d] float32; seed [B]; iteration, step [1] (int64, device).
//   step < tau: out = h + u[:, step] + sigma * eps, and when udot != nullptr,
//               udot[b, i] += sum_j u[b, step, j] * eps[b, i, j] for rows with active[b, i] (or all rows
//               when active == nullptr);  step >= tau: out = h.
cudaError_t aisp_perturb(Dtype dtype, const void* h, const float* u, void* out, float sigma,
                         const int64_t* seed, const int64_t* iteration, const int64_t* step, float* udot,
                         const bool* active, int64_t B, int64_t n, int64_t tau, int64_t d,
                         cudaStream_t stream);

// AISP update, pass 1: udot_out[b, i] = sum_{t < lengths[b,i]} sum_j u[b,t,j] * eps[b,i,t,j].
//   u [B, tau, d] float32; lengths [B, n] int64; udot_out [B, n] float32 (overwritten);
//   partials: B * n * reduction_partials(B * n, tau * d, num_sms) floats of scratch.
cudaError_t aisp_udot(const float* u, const int64_t* lengths, float* udot_out, const int64_t* seed,
                      const int64_t* iteration, float* partials, int64_t B, int64_t n, int64_t tau,
                      int64_t d, int num_sms, cudaStream_t stream);

// AISP update, pass 2: out[b,t,j] = u[b,t,j] + sigma * sum_i weights[b,i] * eps[b,i,t,j] * [t < lengths[b,i]].
//   u, out [B, tau, d] float32; weights [B, n] float32; lengths [B, n] int64.
cudaError_t aisp_apply(const float* u, const float* weights, const int64_t* lengths, float* out, float sigma,
                       const int64_t* seed, const int64_t* iteration, int64_t B, int64_t n, int64_t tau,
                       int64_t d, cudaStream_t stream);

// SEA gradient norms: x viewed as [rows, row_len] (contiguous); norm_out[rows] = ||x[r]||_2 in float32,
// reduced in two kernels (per-CTA partial sums, then a fixed-order finalize).
//   partials: rows * reduction_partials(rows, row_len, num_sms) floats of scratch.
cudaError_t sea_norm(Dtype dtype, const void* x, float* norm_out, float* partials, int64_t rows,
                     int64_t row_len, int num_sms, cudaStream_t stream);

// SEA step update: y, grad, out [B, L, V] (dtype); norm per clip group (nullptr for kNone);
//   sgld (m == nullptr): out = y - lr * g + noise_std * xi;
//   adam (m, v float32 [B, L, V], updated in place): bias correction with t = *step + 1;
//   g = grad * clip_coef(norm, max_norm); xi[b,l,v] = normal(seed[b], step*L*V + l*V + v).
cudaError_t sea_update(Dtype dtype, const void* y, const void* grad, void* out, const float* norm,
                       ClipGroup group, float max_norm, float lr, float noise_std, const int64_t* seed,
                       const int64_t* step, float* m, float* v, double beta1, double beta2, double eps,
                       int64_t B, int64_t L, int64_t V, cudaStream_t stream);

// Gaussian perturbation with the SEA indexing: x, out [B, N]; out = x + std * normal(seed[b], step*N + k).
cudaError_t gaussian_perturb(Dtype dtype, const void* x, void* out, float std, const int64_t* seed,
                             const int64_t* step, int64_t B, int64_t N, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastalign
