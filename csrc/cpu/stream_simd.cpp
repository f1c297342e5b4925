// csrc/cpu/stream_simd.cpp — run-time dispatched stream generator (see stream_simd.h).
// Registers per vector on each path: independent dependency chains interleaved (simd_regs.h). Tuned
// with csrc/tests/bench_stream.cpp on a shared 2-core Xeon with AVX-512 (bench/RESULTS.md); rebuild
// with -DFA_REGS_AVX2=N etc. to re-tune on another CPU. The AVX2 path has two settings: with
// AVX-512VL available to the compiler (32 registers: the wide Philox below) 4, else 3 (plain AVX2:
// swapped-lane rounds, fully unrolled; 2 / 3 / 4 measured alike for the stream, 3 best fused into
// aisp_perturb); AVX-512: 3 since the wide Philox (4 before: 1.47 vs 1.52e9 normals/s at 4 and 3,
// alternating runs).
#ifndef FA_REGS_PORTABLE
#define FA_REGS_PORTABLE 4
#endif
#ifndef FA_REGS_AVX2
#if defined(__AVX512VL__)
#define FA_REGS_AVX2 4
#else
#define FA_REGS_AVX2 3
#endif
#endif
#ifndef FA_REGS_AVX512
#define FA_REGS_AVX512 3
#endif
#include "stream_simd.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "fastalign/box_muller_poly.h"
#include "fastalign/philox.h"

#if defined(__x86_64__) || defined(__i386__)
#define FA_CPU_X86 1
// GCC 12 reports its own _mm512_undefined_*() placeholders (`__Y = __Y`) as maybe-uninitialized
// once inlined here: a known false positive of the intrinsic headers, not of this code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#else
#define FA_CPU_X86 0
#endif
#if defined(__ARM_NEON)
#include <arm_neon.h>
#endif


namespace fastalign {
namespace cpu {

// ----------------------------------------------------------------------------------- portable
// Plain vector extensions, no intrinsics and no target pragma: 128-bit registers of whatever the
// compiler targets (SSE2 on baseline x86-64, NEON on aarch64).
namespace portable {

constexpr int kRegs = FA_REGS_PORTABLE;  // 128-bit vectors per vf (see simd_regs.h)
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

}  // namespace portable

#if FA_CPU_X86
// --------------------------------------------------------------------------------------- AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {

constexpr int kRegs = FA_REGS_AVX2;  // __m256 per vf (see simd_regs.h)
typedef uint32_t nu __attribute__((vector_size(32)));
typedef int32_t ni __attribute__((vector_size(32)));
typedef float nf __attribute__((vector_size(32)));
static inline nf nmax(nf x, float s) { return (nf)_mm256_max_ps(_mm256_set1_ps(s), (__m256)x); }  // see portable
#include "simd_regs.h"

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

}  // namespace avx2
#pragma GCC pop_options

// ------------------------------------------------------------------------------------- AVX-512
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
namespace avx512 {

constexpr int kRegs = FA_REGS_AVX512;  // __m512 per vf (see simd_regs.h)
typedef uint32_t nu __attribute__((vector_size(64)));
typedef int32_t ni __attribute__((vector_size(64)));
typedef float nf __attribute__((vector_size(64)));
static inline nf nmax(nf x, float s) { return (nf)_mm512_max_ps(_mm512_set1_ps(s), (__m512)x); }  // see portable
#include "simd_regs.h"

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

}  // namespace avx512
#pragma GCC pop_options
#endif  // FA_CPU_X86

// ------------------------------------------------------------------------------------ dispatch
namespace {

using GenerateFn = void (*)(int64_t, int64_t, int64_t, float*, uint32_t*);
using PartsFn = void (*)(const float*, int64_t, float*, float*, float*);

GenerateFn generator_for(Isa isa) {
#if FA_CPU_X86
  if (isa == Isa::kAvx512) return avx512::generate;
  if (isa == Isa::kAvx2) return avx2::generate;
#endif
  (void)isa;
  return portable::generate;
}

using PerturbFn = void (*)(int64_t, int64_t, int64_t, const float*, const float*, float, float*, float*);

#define FA_PERTURB_FOR(ns) \
  (fma ? (eps ? ns::perturb<true, true> : ns::perturb<true, false>) : (eps ? ns::perturb<false, true> : ns::perturb<false, false>))
PerturbFn perturb_for(Isa isa, bool fma, bool eps) {
#if FA_CPU_X86
  if (isa == Isa::kAvx512) return FA_PERTURB_FOR(avx512);
  if (isa == Isa::kAvx2) return FA_PERTURB_FOR(avx2);
#endif
  (void)isa;
  return FA_PERTURB_FOR(portable);
}
#undef FA_PERTURB_FOR

PartsFn parts_for(Isa isa) {
#if FA_CPU_X86
  if (isa == Isa::kAvx512) return avx512::box_muller_parts;
  if (isa == Isa::kAvx2) return avx2::box_muller_parts;
#endif
  (void)isa;
  return portable::box_muller_parts;
}

Isa detect_best() {
#if FA_CPU_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kPortable;
}

Isa clamp(Isa requested) {
  const Isa best = best_isa();
  return static_cast<int>(requested) < static_cast<int>(best) ? requested : best;
}

Isa initial_isa() {
  Isa requested = best_isa();
  const char* env = std::getenv("FASTALIGN_CPU_ISA");
  if (env != nullptr && *env != '\0') parse_isa(env, &requested);  // unknown values: ignored
  return clamp(requested);
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{static_cast<int>(initial_isa())};
  return slot;
}

}  // namespace

Isa best_isa() {
  static const Isa best = detect_best();
  return best;
}

Isa active_isa() { return static_cast<Isa>(active_slot().load(std::memory_order_relaxed)); }

Isa set_isa(Isa requested) {
  const Isa isa = clamp(requested);
  active_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "portable";
  }
}

bool parse_isa(const char* name, Isa* out) {
  if (std::strcmp(name, "portable") == 0) *out = Isa::kPortable;
  else if (std::strcmp(name, "avx2") == 0) *out = Isa::kAvx2;
  else if (std::strcmp(name, "avx512") == 0) *out = Isa::kAvx512;
  else if (std::strcmp(name, "auto") == 0) *out = best_isa();
  else return false;
  return true;
}

void randn_blocks_isa(Isa isa, int64_t seed, int64_t first_block, int64_t nblocks, float* out) {
  generator_for(clamp(isa))(seed, first_block, nblocks, out, nullptr);
}

void words_blocks_isa(Isa isa, int64_t seed, int64_t first_block, int64_t nblocks, uint32_t* out) {
  generator_for(clamp(isa))(seed, first_block, nblocks, nullptr, out);
}

void box_muller_parts_isa(Isa isa, const float* u, int64_t n, float* r, float* c, float* s) {
  parts_for(clamp(isa))(u, n, r, c, s);
}

void perturb_range_isa(Isa isa, int64_t seed, int64_t k0, int64_t len, const float* h, const float* u, float sigma,
                       bool fma, float* out, float* eps_out) {
  perturb_for(clamp(isa), fma, eps_out != nullptr)(seed, k0, len, h, u, sigma, out, eps_out);
}

void perturb_range(int64_t seed, int64_t k0, int64_t len, const float* h, const float* u, float sigma, bool fma,
                   float* out, float* eps_out) {
  perturb_range_isa(active_isa(), seed, k0, len, h, u, sigma, fma, out, eps_out);
}

void randn_blocks(int64_t seed, int64_t first_block, int64_t nblocks, float* out) {
  randn_blocks_isa(active_isa(), seed, first_block, nblocks, out);
}

}  // namespace cpu
}  // namespace fastalign
