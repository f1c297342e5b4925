// csrc/cpu/stream_simd_avx512.h — the avx512 path's body (stream_simd.cpp), included twice: in namespace
// avx512 with kRegs = FA_REGS_AVX512 registers per vector, and in avx512::one with 1 register (the last,
// partial vector of a range: stream_simd_impl.h, FA_TAIL_NS). kRegs is defined before it is included.
// No include guard on purpose.
typedef uint32_t nu __attribute__((vector_size(64)));
typedef int32_t ni __attribute__((vector_size(64)));
typedef float nf __attribute__((vector_size(64)));
static inline nf nmax(nf x, float s) { return (nf)_mm512_max_ps(_mm512_set1_ps(s), (__m512)x); }  // see portable
#include "simd_regs.h"
// The last vector of a range goes to the one-register code only when one register holds it: with
// 2 of 3 registers needed the two latency-bound one-register passes measured slower than a whole
// vector (-march=native, 32 x 2048 with udot: 0.95x); with 1 of 3 (sea_step's 256-normal items)
// 1.39x faster.
constexpr int kTailRegs = 1;

static inline void mulhilo(uint32_t a, vu x, vu* hi, vu* lo) {
  const __m512i va = _mm512_set1_epi32(static_cast<int>(a));
  for (int k = 0; k < kRegs; ++k) {
    const __m512i in = (__m512i)x.p[k];
    const __m512i even = _mm512_mul_epu32(in, va);                        // lanes 0, 2, ..., 14
    const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(in, 32), va);  // lanes 1, 3, ..., 15
    hi->p[k] = (nu)_mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
    lo->p[k] = (nu)_mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  }
}

static inline vf vsqrt(vf x) {
  vf r;
  for (int k = 0; k < kRegs; ++k) r.p[k] = (nf)_mm512_sqrt_ps((__m512)x.p[k]);
  return r;
}

// a, b, c, d hold element j = 0..3 of blocks 0..15; out gets the 64 values of blocks 0..15 in order.
static inline void store4_interleaved16(float* out, __m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 t0 = _mm512_unpacklo_ps(a, b);
  const __m512 t1 = _mm512_unpackhi_ps(a, b);
  const __m512 t2 = _mm512_unpacklo_ps(c, d);
  const __m512 t3 = _mm512_unpackhi_ps(c, d);
  // r_j holds blocks j, j+4, j+8, j+12 (one per 128-bit lane)
  const __m512 r0 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
  const __m512 r1 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
  const __m512 r2 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
  const __m512 r3 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
  // 4x4 transpose of 128-bit lanes
  const __m512 s0 = _mm512_shuffle_f32x4(r0, r1, 0x44);  // r0.L0 r0.L1 r1.L0 r1.L1
  const __m512 s1 = _mm512_shuffle_f32x4(r0, r1, 0xEE);  // r0.L2 r0.L3 r1.L2 r1.L3
  const __m512 s2 = _mm512_shuffle_f32x4(r2, r3, 0x44);
  const __m512 s3 = _mm512_shuffle_f32x4(r2, r3, 0xEE);
  _mm512_storeu_ps(out + 0, _mm512_shuffle_f32x4(s0, s2, 0x88));   // blocks 0..3
  _mm512_storeu_ps(out + 16, _mm512_shuffle_f32x4(s0, s2, 0xDD));  // blocks 4..7
  _mm512_storeu_ps(out + 32, _mm512_shuffle_f32x4(s1, s3, 0x88));  // blocks 8..11
  _mm512_storeu_ps(out + 48, _mm512_shuffle_f32x4(s1, s3, 0xDD));  // blocks 12..15
}

static inline void store4_interleaved(float* out, vf a, vf b, vf c, vf d) {
  for (int k = 0; k < kRegs; ++k)
    store4_interleaved16(out + 64 * k, (__m512)a.p[k], (__m512)b.p[k], (__m512)c.p[k], (__m512)d.p[k]);
}

// a, b, c, d hold element j = 0..3 of blocks 0..15; t[0..3] get the 64 values of blocks 0..15 in order.
static inline void transpose4x16(__m512 a, __m512 b, __m512 c, __m512 d, nf* t) {
  const __m512 t0 = _mm512_unpacklo_ps(a, b);
  const __m512 t1 = _mm512_unpackhi_ps(a, b);
  const __m512 t2 = _mm512_unpacklo_ps(c, d);
  const __m512 t3 = _mm512_unpackhi_ps(c, d);
  // r_j holds blocks j, j+4, j+8, j+12 (one per 128-bit lane)
  const __m512 r0 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
  const __m512 r1 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
  const __m512 r2 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
  const __m512 r3 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
  // 4x4 transpose of 128-bit lanes
  const __m512 s0 = _mm512_shuffle_f32x4(r0, r1, 0x44);  // r0.L0 r0.L1 r1.L0 r1.L1
  const __m512 s1 = _mm512_shuffle_f32x4(r0, r1, 0xEE);  // r0.L2 r0.L3 r1.L2 r1.L3
  const __m512 s2 = _mm512_shuffle_f32x4(r2, r3, 0x44);
  const __m512 s3 = _mm512_shuffle_f32x4(r2, r3, 0xEE);
  t[0] = (nf)_mm512_shuffle_f32x4(s0, s2, 0x88);  // blocks 0..3
  t[1] = (nf)_mm512_shuffle_f32x4(s0, s2, 0xDD);  // blocks 4..7
  t[2] = (nf)_mm512_shuffle_f32x4(s1, s3, 0x88);  // blocks 8..11
  t[3] = (nf)_mm512_shuffle_f32x4(s1, s3, 0xDD);  // blocks 12..15
}

// The 4 * kLanes values of a, b, c, d in stream order (t[q]: values q * 16 .. q * 16 + 15).
static inline void transpose4(vf a, vf b, vf c, vf d, nf* t) {
  for (int k = 0; k < kRegs; ++k)
    transpose4x16((__m512)a.p[k], (__m512)b.p[k], (__m512)c.p[k], (__m512)d.p[k], t + 4 * k);
}

static inline nf fmadd(nf a, nf b, nf c) { return (nf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c); }

// Wide Philox (stream_simd_impl.h): 64-bit lanes, the counter word in the low half.
#define FA_PHILOX_WIDE 1
typedef uint64_t nw __attribute__((vector_size(64)));
static inline nw mul_even(nw x, nw a) { return (nw)_mm512_mul_epu32((__m512i)x, (__m512i)a); }
static inline nw hi_to_lo(nw p) { return (nw)_mm512_srli_epi64((__m512i)p, 32); }
static inline nu join_even_odd(nw e, nw o) {
  return (nu)_mm512_mask_blend_epi32(0xAAAA, (__m512i)e, _mm512_slli_epi64((__m512i)o, 32));
}
#include "stream_simd_impl.h"
#undef FA_PHILOX_WIDE
