// csrc/cpu/dtype.h — storage dtypes of the CPU backend: float32, bfloat16, float16 loaded to float32
// for the math and rounded back on store (round to nearest even, as torch's .to(dtype) does).
#pragma once
#include <stdint.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/Exception.h>
#include <c10/core/ScalarType.h>

namespace fastalign {
namespace cpu {

template <typename T>
inline float load(const T* p, int64_t i);
template <typename T>
inline void store(T* p, int64_t i, float v);

template <>
inline float load<float>(const float* p, int64_t i) { return p[i]; }
template <>
inline void store<float>(float* p, int64_t i, float v) { p[i] = v; }

template <>
inline float load<c10::BFloat16>(const c10::BFloat16* p, int64_t i) {
  return c10::detail::f32_from_bits(p[i].x);
}
template <>
inline void store<c10::BFloat16>(c10::BFloat16* p, int64_t i, float v) {
  p[i].x = c10::detail::round_to_nearest_even(v);
}

template <>
inline float load<c10::Half>(const c10::Half* p, int64_t i) {
  return c10::detail::fp16_ieee_to_fp32_value(p[i].x);
}
template <>
inline void store<c10::Half>(c10::Half* p, int64_t i, float v) {
  p[i].x = c10::detail::fp16_ieee_from_fp32_value(v);
}

// Calls BODY with `scalar_t` bound to the C++ type of a float32 / bfloat16 / float16 tensor.
#define FASTALIGN_DISPATCH_STORAGE(DTYPE, NAME, ...)                                              \
  [&] {                                                                                           \
    switch (DTYPE) {                                                                              \
      case at::kFloat: { using scalar_t = float; return __VA_ARGS__(); }                           \
      case at::kBFloat16: { using scalar_t = c10::BFloat16; return __VA_ARGS__(); }                \
      case at::kHalf: { using scalar_t = c10::Half; return __VA_ARGS__(); }                        \
      default:                                                                                    \
        TORCH_CHECK(false, NAME, ": cpu backend supports float32, bfloat16 and float16 storage, got ", \
                    DTYPE);                                                                       \
    }                                                                                             \
  }()

// Elements per work item of the elementwise loops: normals generated into an L1-resident buffer,
// then consumed. Fixed (never derived from the thread count), so every result is thread-independent.
constexpr int64_t kChunk = 2048;
// Work item of the ops that stream large tensors element by element (sea_step's update,
// gaussian_perturb): short bursts of RNG between short memory bursts keep the hardware prefetchers
// streaming. Interleaved A/B on the 2-vCPU Zen 4 (B=4 L=64 V=49152): sea_step best time 23.4 -> 20.2 ms
// at 1 thread and 11.7 -> 9.3 ms at 2; no effect on the AISP rows (d <= 4096), which keep kChunk.
// Per-element results do not depend on it (no reduction crosses a work item).
constexpr int64_t kStreamChunk = 256;

}  // namespace cpu
}  // namespace fastalign
