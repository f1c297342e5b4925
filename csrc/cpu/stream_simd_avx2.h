// csrc/cpu/stream_simd_avx2.h — the avx2 path's body (stream_simd.cpp), included twice: in namespace
// avx2 with kRegs = FA_REGS_AVX2 registers per vector, and in avx2::one with 1 register (the last,
// partial vector of a range: stream_simd_impl.h, FA_TAIL_NS). kRegs is defined before it is included.
// No include guard on purpose.
typedef uint32_t nu __attribute__((vector_size(32)));
typedef int32_t ni __attribute__((vector_size(32)));
typedef float nf __attribute__((vector_size(32)));
static inline nf nmax(nf x, float s) { return (nf)_mm256_max_ps(_mm256_set1_ps(s), (__m256)x); }  // see portable
#include "simd_regs.h"
constexpr int kTailRegs = kRegs;  // the last vector of a range: always the one-register code

static inline void mulhilo(uint32_t a, vu x, vu* hi, vu* lo) {
  const __m256i va = _mm256_set1_epi32(static_cast<int>(a));
  for (int k = 0; k < kRegs; ++k) {
    const __m256i in = (__m256i)x.p[k];
    const __m256i even = _mm256_mul_epu32(in, va);                        // lanes 0, 2, 4, 6
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(in, 32), va);  // lanes 1, 3, 5, 7
    hi->p[k] = (nu)_mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    lo->p[k] = (nu)_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  }
}

static inline vf vsqrt(vf x) {
  vf r;
  for (int k = 0; k < kRegs; ++k) r.p[k] = (nf)_mm256_sqrt_ps((__m256)x.p[k]);
  return r;
}

// a, b, c, d hold element j = 0..3 of blocks 0..7; out gets the 32 values of blocks 0..7 in order.
static inline void store4_interleaved8(float* out, __m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 t0 = _mm256_unpacklo_ps(a, b);  // a0 b0 a1 b1 | a4 b4 a5 b5
  const __m256 t1 = _mm256_unpackhi_ps(a, b);  // a2 b2 a3 b3 | a6 b6 a7 b7
  const __m256 t2 = _mm256_unpacklo_ps(c, d);
  const __m256 t3 = _mm256_unpackhi_ps(c, d);
  const __m256 r0 = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t2)));  // blk 0 | 4
  const __m256 r1 = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t2)));  // blk 1 | 5
  const __m256 r2 = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t1), _mm256_castps_pd(t3)));  // blk 2 | 6
  const __m256 r3 = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t1), _mm256_castps_pd(t3)));  // blk 3 | 7
  _mm256_storeu_ps(out + 0, _mm256_permute2f128_ps(r0, r1, 0x20));
  _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(r2, r3, 0x20));
  _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(r0, r1, 0x31));
  _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(r2, r3, 0x31));
}

static inline void store4_interleaved(float* out, vf a, vf b, vf c, vf d) {
  for (int k = 0; k < kRegs; ++k)
    store4_interleaved8(out + 32 * k, (__m256)a.p[k], (__m256)b.p[k], (__m256)c.p[k], (__m256)d.p[k]);
}

// a, b, c, d hold element j = 0..3 of blocks 0..7; t[0..3] get the 32 values of blocks 0..7 in order.
static inline void transpose4x8(__m256 a, __m256 b, __m256 c, __m256 d, nf* t) {
  const __m256 t0 = _mm256_unpacklo_ps(a, b);  // a0 b0 a1 b1 | a4 b4 a5 b5
  const __m256 t1 = _mm256_unpackhi_ps(a, b);  // a2 b2 a3 b3 | a6 b6 a7 b7
  const __m256 t2 = _mm256_unpacklo_ps(c, d);
  const __m256 t3 = _mm256_unpackhi_ps(c, d);
  const __m256 r0 = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t2)));  // blk 0 | 4
  const __m256 r1 = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t2)));  // blk 1 | 5
  const __m256 r2 = _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t1), _mm256_castps_pd(t3)));  // blk 2 | 6
  const __m256 r3 = _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t1), _mm256_castps_pd(t3)));  // blk 3 | 7
  t[0] = (nf)_mm256_permute2f128_ps(r0, r1, 0x20);
  t[1] = (nf)_mm256_permute2f128_ps(r2, r3, 0x20);
  t[2] = (nf)_mm256_permute2f128_ps(r0, r1, 0x31);
  t[3] = (nf)_mm256_permute2f128_ps(r2, r3, 0x31);
}

// The 4 * kLanes values of a, b, c, d in stream order (t[q]: values q * 8 .. q * 8 + 7).
static inline void transpose4(vf a, vf b, vf c, vf d, nf* t) {
  for (int k = 0; k < kRegs; ++k)
    transpose4x8((__m256)a.p[k], (__m256)b.p[k], (__m256)c.p[k], (__m256)d.p[k], t + 4 * k);
}

static inline nf fmadd(nf a, nf b, nf c) { return (nf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c); }

// Plain AVX2 (an AVX2-only CPU; the ahead-of-time build's avx2 path): the 32-bit-lane rounds with
// the hi words in swapped order (stream_simd_impl.h): 6 instructions per multiply instead of 7.
// With the round loop unrolled, 1.09x the normals/s of the in-order rounds (bench/RESULTS.md).
#if !defined(__AVX512VL__)
#define FA_PHILOX_HALF_SWAP 1
// mulhilo with the hi words in the lane order S = (0, 2, 1, 3) of every 128-bit half: vshufps takes
// the hi words of the even products (lanes 0, 2) and of the odd ones (1, 3) in one instruction.
static inline void mulhilo_swap(uint32_t a, vu x, vu* hi, vu* lo) {
  const __m256i va = _mm256_set1_epi32(static_cast<int>(a));
  for (int k = 0; k < kRegs; ++k) {
    const __m256i in = (__m256i)x.p[k];
    const __m256i even = _mm256_mul_epu32(in, va);                        // lanes 0, 2, 4, 6
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(in, 32), va);  // lanes 1, 3, 5, 7
    hi->p[k] = (nu)_mm256_castps_si256(
        _mm256_shuffle_ps(_mm256_castsi256_ps(even), _mm256_castsi256_ps(odd), 0xDD));  // hi of 0 2 1 3
    lo->p[k] = (nu)_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  }
}
static inline vu unswap(vu x) {
  vu r;
  for (int k = 0; k < kRegs; ++k) r.p[k] = (nu)_mm256_shuffle_epi32((__m256i)x.p[k], 0xD8);
  return r;
}
#endif

// Wide Philox (stream_simd_impl.h) only where the compiler may use AVX-512VL on 256-bit vectors (a
// -march=native build on an AVX-512 CPU, forced to this path): it needs the 32 vector registers and
// the three-way XOR (vpternlogd). With AVX2's 16 registers it spills and loses to the 32-bit-lane
// rounds (measured on this path with the ahead-of-time flags; bench/RESULTS.md).
#if defined(__AVX512VL__)
#define FA_PHILOX_WIDE 1
typedef uint64_t nw __attribute__((vector_size(32)));
static inline nw mul_even(nw x, nw a) { return (nw)_mm256_mul_epu32((__m256i)x, (__m256i)a); }
static inline nw hi_to_lo(nw p) { return (nw)_mm256_srli_epi64((__m256i)p, 32); }
static inline nu join_even_odd(nw e, nw o) {
  return (nu)_mm256_blend_epi32((__m256i)e, _mm256_slli_epi64((__m256i)o, 32), 0xAA);
}
#endif
#include "stream_simd_impl.h"
#ifdef FA_PHILOX_WIDE
#undef FA_PHILOX_WIDE
#endif
#ifdef FA_PHILOX_HALF_SWAP
#undef FA_PHILOX_HALF_SWAP
#endif
