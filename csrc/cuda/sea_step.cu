// csrc/cuda/sea_step.cu — one SEA Langevin / Adam step on response logits y [B, L, V].
//
// Norm (two kernels, deterministic): the gradient is viewed as [rows, row_len] — chain clipping
// [B, L*V], row clipping [B*L, V], global clipping [1, B*L*V] — each row is split over P CTAs that
// write partial sums of squares, then one warp per row adds its P partials in a fixed order and takes
// the square root. No float atomics, so the norm (and everything after it) is bit-identical across runs.
//
// Update (one kernel): g = grad * clip_coef(norm, max_norm) (fastalign/clip.h);
//   sgld: out = y - lr*g + noise_std*xi              (fastalign/update.h: sgld_update)
//   adam: m, v updated in place, bias-corrected with t = step + 1   (adam_update, make_adam_coefs)
//   xi[b, l, v] = normal(seed[b], step*L*V + l*V + v): chain b is one contiguous stream range of L*V
//   elements, and a thread owns one Philox counter block of it (4 elements, vector access when
//   L*V % 4 == 0). noise_std == 0 skips the generator.
#include "common.cuh"
#include "fastalign/clip.h"
#include "fastalign/update.h"
#include "launchers.h"

namespace fastalign {
namespace cuda {
namespace {

// grid (P, min(rows, 65535)): partials[row * P + blockIdx.x] = sum of squares of this CTA's share.
template <typename T>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
sum_squares_partial_kernel(const T* __restrict__ x, float* __restrict__ partials, int64_t rows, int64_t row_len,
                           bool vec) {
  __shared__ float scratch[kWarps];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const T* x_row = x + row * row_len;
    float acc = 0.0f;
    if (vec) {  // row_len % 4 == 0 and aligned
      for (int64_t q = q0; 4 * q < row_len; q += stride) {
        float g[4];
        load4(x_row + 4 * q, g);
#pragma unroll
        for (int e = 0; e < 4; ++e) acc += g[e] * g[e];
      }
    } else {
      for (int64_t k = q0; k < row_len; k += stride) {
        const float g = load(x_row + k);
        acc += g * g;
      }
    }
    const float total = block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[row * gridDim.x + blockIdx.x] = total;
  }
}

// grid (min(rows, 65535)), one warp per row: norm[row] = sqrt(sum of the row's partials), fixed order.
__global__ void __launch_bounds__(32)
norm_finalize_kernel(const float* __restrict__ partials, float* __restrict__ norm_out, int64_t rows,
                     int num_partials) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float total = warp_sum_partials(partials, row, num_partials);
    if (threadIdx.x == 0) norm_out[row] = sqrtf(total);
  }
}

// One Philox block of a chain: its 4 elements of y and grad (and Adam's m, v), at chain positions
// k0 .. k0 + 3. `whole`: the 4 are in the chain and aligned (vector access); else each element is
// read where 0 <= k < N and 0 elsewhere (the chain's first and last block).
struct Block {
  float y[4], g[4], m[4], v[4];
};

template <typename T, bool kAdam>
__device__ __forceinline__ void load_block(const T* __restrict__ y, const T* __restrict__ grad,
                                           const float* __restrict__ m, const float* __restrict__ v,
                                           int64_t at, int64_t k0, int64_t N, bool whole, Block& x) {
  if (whole) {
    load4(y + at + k0, x.y);
    load4(grad + at + k0, x.g);
    if (kAdam) {
      load4(m + at + k0, x.m);
      load4(v + at + k0, x.v);
    }
    return;
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int64_t k = k0 + e;
    const bool in = k >= 0 && k < N;
    x.y[e] = in ? load(y + at + k) : 0.0f;
    x.g[e] = in ? load(grad + at + k) : 0.0f;
    if (kAdam) {
      x.m[e] = in ? m[at + k] : 0.0f;
      x.v[e] = in ? v[at + k] : 0.0f;
    }
  }
}

template <typename T, bool kAdam>
__device__ __forceinline__ void store_block(T* __restrict__ out, float* __restrict__ m, float* __restrict__ v,
                                            int64_t at, int64_t k0, int64_t N, bool whole, const Block& x) {
  if (whole) {
    store4(out + at + k0, x.y);
    if (kAdam) {
      store4(m + at + k0, x.m);
      store4(v + at + k0, x.v);
    }
    return;
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    const int64_t k = k0 + e;
    if (k < 0 || k >= N) continue;
    store(out + at + k, x.y[e]);
    if (kAdam) {
      m[at + k] = x.m[e];
      v[at + k] = x.v[e];
    }
  }
}

// The clipped gradient, the optimizer step and the noise on the block's 4 elements (in x.y, and for
// Adam x.m, x.v). coef: the chain's / the whole tensor's clip coefficient; row clipping reads the
// norm of each element's row l = k / V of chain b instead.
template <bool kAdam>
__device__ __forceinline__ void update_block(Block& x, const float (&xi)[4], ClipGroup group, float coef,
                                             const float* __restrict__ norm, float max_norm, int64_t b,
                                             int64_t L, int64_t V, int64_t k0, int64_t N, float lr,
                                             float noise_std, const AdamCoefs& coefs) {
#pragma unroll
  for (int e = 0; e < 4; ++e) {
    float c = coef;
    if (group == ClipGroup::kRow) {
      const int64_t k = k0 + e;
      const int64_t l = (k >= 0 && k < N) ? k / V : 0;
      c = clip_coef(norm[b * L + l], max_norm);
    }
    const float g = group == ClipGroup::kNone ? x.g[e] : x.g[e] * c;
    if (kAdam) {
      x.y[e] = adam_update(x.y[e], g, &x.m[e], &x.v[e], coefs, noise_std, xi[e]);
    } else {
      x.y[e] = sgld_update(x.y[e], g, lr, noise_std, xi[e]);
    }
  }
}

// grid (ceil(max_blocks / kThreads), min(B, 65535)).
template <typename T, bool kAdam>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
sea_update_kernel(const T* __restrict__ y, const T* __restrict__ grad, T* __restrict__ out,
                  const float* __restrict__ norm, int group, float max_norm, float lr, float noise_std,
                  const int64_t* __restrict__ seed, const int64_t* __restrict__ step, float* __restrict__ m,
                  float* __restrict__ v, double beta1, double beta2, double eps, int64_t B, int64_t L, int64_t V,
                  bool vec) {
  __shared__ AdamCoefs coefs_shared;
  const int64_t st = *step;
  if (kAdam) {  // the step's constants once per CTA (double pow), from the device-side step counter
    if (threadIdx.x == 0) coefs_shared = make_adam_coefs(lr, beta1, beta2, eps, st);
    __syncthreads();
  }
  const int64_t N = L * V;  // one chain
  const int64_t base = st * N;
  const int64_t first = base >> 2;
  const int64_t num_blocks = ((base + N - 1) >> 2) - first + 1;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  const bool with_noise = noise_std != 0.0f;
  const auto group_kind = static_cast<ClipGroup>(group);

  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    const int64_t s = seed[b];
    const int64_t offset = b * N;
    float coef = 1.0f;  // chain / global coefficient (row clipping recomputes it per element)
    if (group_kind == ClipGroup::kChain) coef = clip_coef(norm[b], max_norm);
    if (group_kind == ClipGroup::kGlobal) coef = clip_coef(norm[0], max_norm);
    for (int64_t q = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; q < num_blocks; q += stride) {
      float xi[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (with_noise) randn4(s, first + q, xi);
      const int64_t k0 = 4 * (first + q) - base;  // position in the chain of the block's first element
      const bool whole = vec;                      // N % 4 == 0: the block is 4 aligned elements
      Block x;
      load_block<T, kAdam>(y, grad, m, v, offset, k0, N, whole, x);
      update_block<kAdam>(x, xi, group_kind, coef, norm, max_norm, b, L, V, k0, N, lr, noise_std, coefs_shared);
      store_block<T, kAdam>(out, m, v, offset, k0, N, whole, x);
    }
  }
}

template <typename T>
cudaError_t launch_norm(const void* x, float* norm_out, float* partials, int64_t rows, int64_t row_len,
                        int num_sms, cudaStream_t stream) {
  const int num_partials = reduction_partials(rows, row_len, num_sms);
  const bool vec = row_len % 4 == 0 && aligned4<T>(x);
  const unsigned grid_rows = static_cast<unsigned>(rows < kMaxGridY ? rows : kMaxGridY);
  sum_squares_partial_kernel<T><<<dim3(num_partials, grid_rows), kThreads, 0, stream>>>(
      static_cast<const T*>(x), partials, rows, row_len, vec);
  norm_finalize_kernel<<<grid_rows, 32, 0, stream>>>(partials, norm_out, rows, num_partials);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_update(const void* y, const void* grad, void* out, const float* norm, ClipGroup group,
                          float max_norm, float lr, float noise_std, const int64_t* seed, const int64_t* step,
                          float* m, float* v, double beta1, double beta2, double eps, int64_t B, int64_t L,
                          int64_t V, cudaStream_t stream) {
  const int64_t N = L * V;
  const bool vec = N % 4 == 0 && aligned4<T>(y) && aligned4<T>(grad) && aligned4<T>(out) && aligned4<float>(m) &&
                   aligned4<float>(v);
  const int64_t max_blocks = (N + 6) / 4;
  const dim3 grid(static_cast<unsigned>((max_blocks + kThreads - 1) / kThreads),
                  static_cast<unsigned>(B < kMaxGridY ? B : kMaxGridY));
  const T* yp = static_cast<const T*>(y);
  const T* gp = static_cast<const T*>(grad);
  T* op = static_cast<T*>(out);
  if (group == ClipGroup::kNone) norm = nullptr;
  if (m != nullptr) {
    sea_update_kernel<T, true><<<grid, kThreads, 0, stream>>>(yp, gp, op, norm, static_cast<int>(group), max_norm,
                                                              lr, noise_std, seed, step, m, v, beta1, beta2, eps,
                                                              B, L, V, vec);
  } else {
    sea_update_kernel<T, false><<<grid, kThreads, 0, stream>>>(yp, gp, op, norm, static_cast<int>(group),
                                                               max_norm, lr, noise_std, seed, step, nullptr,
                                                               nullptr, beta1, beta2, eps, B, L, V, vec);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t sea_norm(Dtype dtype, const void* x, float* norm_out, float* partials, int64_t rows,
                     int64_t row_len, int num_sms, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  switch (dtype) {
    case Dtype::kFloat32: return launch_norm<float>(x, norm_out, partials, rows, row_len, num_sms, stream);
    case Dtype::kFloat16: return launch_norm<__half>(x, norm_out, partials, rows, row_len, num_sms, stream);
    case Dtype::kBFloat16:
      return launch_norm<__nv_bfloat16>(x, norm_out, partials, rows, row_len, num_sms, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t sea_update(Dtype dtype, const void* y, const void* grad, void* out, const float* norm,
                       ClipGroup group, float max_norm, float lr, float noise_std, const int64_t* seed,
                       const int64_t* step, float* m, float* v, double beta1, double beta2, double eps,
                       int64_t B, int64_t L, int64_t V, cudaStream_t stream) {
  if (B == 0 || L * V == 0) return cudaSuccess;
  switch (dtype) {
    case Dtype::kFloat32:
      return launch_update<float>(y, grad, out, norm, group, max_norm, lr, noise_std, seed, step, m, v, beta1,
                                  beta2, eps, B, L, V, stream);
    case Dtype::kFloat16:
      return launch_update<__half>(y, grad, out, norm, group, max_norm, lr, noise_std, seed, step, m, v, beta1,
                                   beta2, eps, B, L, V, stream);
    case Dtype::kBFloat16:
      return launch_update<__nv_bfloat16>(y, grad, out, norm, group, max_norm, lr, noise_std, seed, step, m, v,
                                          beta1, beta2, eps, B, L, V, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace fastalign
