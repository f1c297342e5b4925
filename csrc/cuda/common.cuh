// csrc/cuda/common.cuh — device helpers shared by the CUDA kernels of fastalign (no torch headers).
//
//   * storage dtypes: float, __half, __nv_bfloat16 — loaded to float32, math in float32, stored with
//     round-to-nearest-even (what torch's `.to(dtype)` does);
//   * vectorised access to 4 consecutive elements: one 128-bit access for float32, one 64-bit access
//     for the 16-bit dtypes (a thread owns 4 elements = one Philox call of the stream);
//   * randn4_at: the 4 normals normal(seed, k0 + 0..3) for any k0 (one Philox call when k0 % 4 == 0,
//     two otherwise), composed from fastalign/philox.h — the per-element math lives there only;
//   * a deterministic block reduction (fixed shuffle pattern, fixed order across warps; no atomics).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "fastalign/philox.h"

namespace fastalign {
namespace cuda {

constexpr int kThreads = 256;          // threads per CTA of every elementwise / partial-sum kernel
constexpr int kWarps = kThreads / 32;  // warps per CTA
constexpr int kMaxGridY = 65535;       // gridDim.y limit; kernels loop over rows beyond it
// __launch_bounds__(kThreads, kMinBlocks): at least 4 resident CTAs (1024 threads) per SM, i.e. at most
// 64 registers per thread. Without the second argument ptxas (CUDA 13) sometimes spills a register
// in the cold range-reduction path of sinf/cosf to save registers it does not need to save.
constexpr int kMinBlocks = 4;

// ---- scalar load / store -------------------------------------------------------------------------
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <typename T>
__device__ __forceinline__ float load(const T* p) { return to_float(*p); }
template <typename T>
__device__ __forceinline__ void store(T* p, float x) { *p = from_float<T>(x); }

// ---- 4-element vector load / store (p must be aligned to 4 * sizeof(T)) --------------------------
__device__ __forceinline__ void load4(const float* p, float v[4]) {
  const float4 r = *reinterpret_cast<const float4*>(p);
  v[0] = r.x; v[1] = r.y; v[2] = r.z; v[3] = r.w;
}
__device__ __forceinline__ void store4(float* p, const float v[4]) {
  *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}

__device__ __forceinline__ void load4(const __half* p, float v[4]) {
  const uint2 r = *reinterpret_cast<const uint2*>(p);
  __half2 a, b;
  a = *reinterpret_cast<const __half2*>(&r.x);
  b = *reinterpret_cast<const __half2*>(&r.y);
  const float2 fa = __half22float2(a), fb = __half22float2(b);
  v[0] = fa.x; v[1] = fa.y; v[2] = fb.x; v[3] = fb.y;
}
__device__ __forceinline__ void store4(__half* p, const float v[4]) {
  const __half2 a = __floats2half2_rn(v[0], v[1]);
  const __half2 b = __floats2half2_rn(v[2], v[3]);
  uint2 r;
  r.x = *reinterpret_cast<const uint32_t*>(&a);
  r.y = *reinterpret_cast<const uint32_t*>(&b);
  *reinterpret_cast<uint2*>(p) = r;
}

__device__ __forceinline__ void load4(const __nv_bfloat16* p, float v[4]) {
  const uint2 r = *reinterpret_cast<const uint2*>(p);
  __nv_bfloat162 a, b;
  a = *reinterpret_cast<const __nv_bfloat162*>(&r.x);
  b = *reinterpret_cast<const __nv_bfloat162*>(&r.y);
  const float2 fa = __bfloat1622float2(a), fb = __bfloat1622float2(b);
  v[0] = fa.x; v[1] = fa.y; v[2] = fb.x; v[3] = fb.y;
}
__device__ __forceinline__ void store4(__nv_bfloat16* p, const float v[4]) {
  const __nv_bfloat162 a = __floats2bfloat162_rn(v[0], v[1]);
  const __nv_bfloat162 b = __floats2bfloat162_rn(v[2], v[3]);
  uint2 r;
  r.x = *reinterpret_cast<const uint32_t*>(&a);
  r.y = *reinterpret_cast<const uint32_t*>(&b);
  *reinterpret_cast<uint2*>(p) = r;
}

// True when p can be accessed 4 elements at a time (host side, for the `vec` launch flag).
template <typename T>
inline bool aligned4(const void* p) {
  return p == nullptr || (reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T))) == 0;
}

// ---- the random stream ---------------------------------------------------------------------------
// normal(seed, k0 + e) for e = 0..3 and any k0 >= 0. One Philox call when k0 is a multiple of 4;
// otherwise two, and Box-Muller only on the 2 (even shift) or 3 (odd shift) word pairs that are used.
// Every index is a compile-time constant, so nothing lands in local memory.
__device__ __forceinline__ void randn4_at(int64_t seed, int64_t k0, float out[4]) {
  const int64_t block = k0 >> 2;
  const int shift = static_cast<int>(k0 & 3);
  if (shift == 0) {
    randn4(seed, block, out);
    return;
  }
  // Wanted normals, by shift: 1 -> lo[1..3] hi[0]; 2 -> lo[2..3] hi[0..1]; 3 -> lo[3] hi[0..2].
  // Box-Muller pairs are (w0, w1) and (w2, w3) of a block; transform each block's words as soon as
  // they exist so that at most one block of words is live at a time.
  float a0, a1, b0, b1, c0 = 0.0f, c1;
  {
    const Philox4 lo = stream_words(seed, block);
    if (shift == 1) {
      box_muller(uint_to_uniform(lo.w[0]), uint_to_uniform(lo.w[1]), &a0, &a1);
      box_muller(uint_to_uniform(lo.w[2]), uint_to_uniform(lo.w[3]), &b0, &b1);
    } else {
      box_muller(uint_to_uniform(lo.w[2]), uint_to_uniform(lo.w[3]), &a0, &a1);
    }
  }
  {
    const Philox4 hi = stream_words(seed, block + 1);
    if (shift == 1) {
      box_muller(uint_to_uniform(hi.w[0]), uint_to_uniform(hi.w[1]), &c0, &c1);
    } else {
      box_muller(uint_to_uniform(hi.w[0]), uint_to_uniform(hi.w[1]), &b0, &b1);
      if (shift == 3) box_muller(uint_to_uniform(hi.w[2]), uint_to_uniform(hi.w[3]), &c0, &c1);
    }
  }
  if (shift == 2) {
    out[0] = a0; out[1] = a1; out[2] = b0; out[3] = b1;
  } else {
    out[0] = a1; out[1] = b0; out[2] = b1; out[3] = c0;
  }
}

// ---- deterministic reduction ---------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of `v` over a CTA of kThreads threads, in a fixed order (bit-identical across runs). The result
// is valid in thread 0 only. `scratch` holds kWarps floats of shared memory; the trailing barrier makes
// it safe to call again in a loop.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.0f;
  if (threadIdx.x == 0) {
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += scratch[w];
  }
  __syncthreads();
  return total;
}

// Sum partials[row * count + 0 .. count) in a fixed order with one warp; valid in lane 0.
__device__ __forceinline__ float warp_sum_partials(const float* partials, int64_t row, int count) {
  const float* p = partials + row * count;
  float v = 0.0f;
  for (int i = threadIdx.x & 31; i < count; i += 32) v += p[i];
  return warp_sum(v);
}

}  // namespace cuda
}  // namespace fastalign
