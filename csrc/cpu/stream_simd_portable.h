// csrc/cpu/stream_simd_portable.h — the portable path's body (stream_simd.cpp), included twice: in namespace
// portable with kRegs = FA_REGS_PORTABLE registers per vector, and in portable::one with 1 register (the last,
// partial vector of a range: stream_simd_impl.h, FA_TAIL_NS). kRegs is defined before it is included.
// No include guard on purpose.
typedef uint32_t nu __attribute__((vector_size(16)));
typedef int32_t ni __attribute__((vector_size(16)));
typedef float nf __attribute__((vector_size(16)));
// x < s ? s : x: maxps(s, x) is exactly that ((s > x) ? s : x, x returned when unordered), one
// instruction where GCC keeps the compare and the blend.
static inline nf nmax(nf x, float s) {
#if defined(__SSE__)
  return (nf)_mm_max_ps(_mm_set1_ps(s), (__m128)x);
#else
  return x < s ? nf{} + s : x;
#endif
}
#include "simd_regs.h"
constexpr int kTailRegs = kRegs;  // the last vector of a range: always the one-register code

// 32x32 -> 64-bit products: the one operation vector extensions cannot say (a 64-bit lane product is
// scalar code on both NEON and SSE2), so the baseline instruction of each: pmuludq, umull/umull2.
static inline void mulhilo(uint32_t a, vu x, vu* hi, vu* lo) {
  for (int k = 0; k < kRegs; ++k) {
#if defined(__SSE2__)
    const __m128i va = _mm_set1_epi32(static_cast<int>(a)), in = (__m128i)x.p[k];
    const __m128i even = _mm_mul_epu32(in, va);                     // lanes 0, 2
    const __m128i odd = _mm_mul_epu32(_mm_srli_epi64(in, 32), va);  // lanes 1, 3
    const __m128i p01 = _mm_unpacklo_epi32(even, odd), p23 = _mm_unpackhi_epi32(even, odd);
    lo->p[k] = (nu)_mm_unpacklo_epi64(p01, p23);
    hi->p[k] = (nu)_mm_unpackhi_epi64(p01, p23);
#elif defined(__ARM_NEON)
    const uint32x4_t in = (uint32x4_t)x.p[k];
    const uint32x4_t p01 = vreinterpretq_u32_u64(vmull_u32(vget_low_u32(in), vdup_n_u32(a)));
    const uint32x4_t p23 = vreinterpretq_u32_u64(vmull_high_u32(in, vdupq_n_u32(a)));
    lo->p[k] = (nu)vuzp1q_u32(p01, p23);
    hi->p[k] = (nu)vuzp2q_u32(p01, p23);
#else
    for (int i = 0; i < 4; ++i) {
      const uint64_t product = static_cast<uint64_t>(x.p[k][i]) * a;
      hi->p[k][i] = static_cast<uint32_t>(product >> 32);
      lo->p[k][i] = static_cast<uint32_t>(product);
    }
#endif
  }
}

static inline vf vsqrt(vf x) {
  vf r;
  for (int k = 0; k < kRegs; ++k)
    for (int i = 0; i < kRegLanes; ++i) r.p[k][i] = __builtin_sqrtf(x.p[k][i]);  // sqrtps / fsqrt v.4s
  return r;
}

#if defined(__clang__)
#define FA_SHUFFLE(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#else
#define FA_SHUFFLE(a, b, i, j, k, l) __builtin_shuffle(a, b, ni{i, j, k, l})
#endif

// a, b, c, d hold element j = 0..3 of blocks 0..3; t[0..3] get the 16 values of blocks 0..3 in order.
static inline void transpose4x4(nf a, nf b, nf c, nf d, nf* t) {
  const nf t0 = FA_SHUFFLE(a, b, 0, 4, 1, 5), t1 = FA_SHUFFLE(a, b, 2, 6, 3, 7);
  const nf t2 = FA_SHUFFLE(c, d, 0, 4, 1, 5), t3 = FA_SHUFFLE(c, d, 2, 6, 3, 7);
  t[0] = FA_SHUFFLE(t0, t2, 0, 1, 4, 5);
  t[1] = FA_SHUFFLE(t0, t2, 2, 3, 6, 7);
  t[2] = FA_SHUFFLE(t1, t3, 0, 1, 4, 5);
  t[3] = FA_SHUFFLE(t1, t3, 2, 3, 6, 7);
}
// a, b, c, d hold element j = 0..3 of blocks 0..3; out gets the 16 values of blocks 0..3 in order.
static inline void store4_interleaved4(float* out, nf a, nf b, nf c, nf d) {
  const nf t0 = FA_SHUFFLE(a, b, 0, 4, 1, 5), t1 = FA_SHUFFLE(a, b, 2, 6, 3, 7);
  const nf t2 = FA_SHUFFLE(c, d, 0, 4, 1, 5), t3 = FA_SHUFFLE(c, d, 2, 6, 3, 7);
  const nf r[4] = {FA_SHUFFLE(t0, t2, 0, 1, 4, 5), FA_SHUFFLE(t0, t2, 2, 3, 6, 7),
                   FA_SHUFFLE(t1, t3, 0, 1, 4, 5), FA_SHUFFLE(t1, t3, 2, 3, 6, 7)};
  __builtin_memcpy(out, r, sizeof(r));
}
#undef FA_SHUFFLE

static inline void store4_interleaved(float* out, vf a, vf b, vf c, vf d) {
  for (int k = 0; k < kRegs; ++k) store4_interleaved4(out + 16 * k, a.p[k], b.p[k], c.p[k], d.p[k]);
}

// The 4 * kLanes values of a, b, c, d (element j = 0..3 of blocks 0..kLanes-1) in stream order:
// t[q] holds values q * kRegLanes .. (q + 1) * kRegLanes - 1.
static inline void transpose4(vf a, vf b, vf c, vf d, nf* t) {
  for (int k = 0; k < kRegs; ++k) transpose4x4(a.p[k], b.p[k], c.p[k], d.p[k], t + 4 * k);
}

static inline nf fmadd(nf a, nf b, nf c) {
#if defined(__FMA__)
  return (nf)_mm_fmadd_ps((__m128)a, (__m128)b, (__m128)c);
#elif defined(__ARM_FEATURE_FMA)
  return (nf)vfmaq_f32((float32x4_t)c, (float32x4_t)a, (float32x4_t)b);
#else
  nf r;
  for (int i = 0; i < 4; ++i) r[i] = __builtin_fmaf(a[i], b[i], c[i]);
  return r;
#endif
}

#include "stream_simd_impl.h"
