// csrc/cpu/stream_simd.cpp — run-time dispatched stream generator (see stream_simd.h).
#include "stream_simd.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

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

namespace fastalign {
namespace cpu {

// ----------------------------------------------------------------------------------- portable
namespace portable {

static void generate(int64_t seed, int64_t first_block, int64_t nblocks, float* normals, uint32_t* words) {
  for (int64_t b = 0; b < nblocks; ++b) {
    if (words != nullptr) {
      const Philox4 w = stream_words(seed, first_block + b);
      for (int j = 0; j < 4; ++j) words[4 * b + j] = w.w[j];
    } else {
      randn4(seed, first_block + b, normals + 4 * b);
    }
  }
}

}  // namespace portable

#if FA_CPU_X86
// --------------------------------------------------------------------------------------- AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {

constexpr int kLanes = 16;  // two __m256 per vector (see simd_pair.h)
typedef uint32_t nu __attribute__((vector_size(32)));
typedef int32_t ni __attribute__((vector_size(32)));
typedef float nf __attribute__((vector_size(32)));
#include "simd_pair.h"

static inline void mulhilo(uint32_t a, vu x, vu* hi, vu* lo) {
  const __m256i va = _mm256_set1_epi32(static_cast<int>(a));
  for (int k = 0; k < 2; ++k) {
    const __m256i in = (__m256i)x.p[k];
    const __m256i even = _mm256_mul_epu32(in, va);                        // lanes 0, 2, 4, 6
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(in, 32), va);  // lanes 1, 3, 5, 7
    hi->p[k] = (nu)_mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    lo->p[k] = (nu)_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  }
}

static inline vf vsqrt(vf x) {
  return vf{{(nf)_mm256_sqrt_ps((__m256)x.p[0]), (nf)_mm256_sqrt_ps((__m256)x.p[1])}};
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
  store4_interleaved8(out, (__m256)a.p[0], (__m256)b.p[0], (__m256)c.p[0], (__m256)d.p[0]);
  store4_interleaved8(out + 32, (__m256)a.p[1], (__m256)b.p[1], (__m256)c.p[1], (__m256)d.p[1]);
}

#include "stream_simd_impl.h"

}  // namespace avx2
#pragma GCC pop_options

// ------------------------------------------------------------------------------------- AVX-512
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
namespace avx512 {

constexpr int kLanes = 32;  // two __m512 per vector (see simd_pair.h)
typedef uint32_t nu __attribute__((vector_size(64)));
typedef int32_t ni __attribute__((vector_size(64)));
typedef float nf __attribute__((vector_size(64)));
#include "simd_pair.h"

static inline void mulhilo(uint32_t a, vu x, vu* hi, vu* lo) {
  const __m512i va = _mm512_set1_epi32(static_cast<int>(a));
  for (int k = 0; k < 2; ++k) {
    const __m512i in = (__m512i)x.p[k];
    const __m512i even = _mm512_mul_epu32(in, va);                        // lanes 0, 2, ..., 14
    const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(in, 32), va);  // lanes 1, 3, ..., 15
    hi->p[k] = (nu)_mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
    lo->p[k] = (nu)_mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  }
}

static inline vf vsqrt(vf x) {
  return vf{{(nf)_mm512_sqrt_ps((__m512)x.p[0]), (nf)_mm512_sqrt_ps((__m512)x.p[1])}};
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
  store4_interleaved16(out, (__m512)a.p[0], (__m512)b.p[0], (__m512)c.p[0], (__m512)d.p[0]);
  store4_interleaved16(out + 64, (__m512)a.p[1], (__m512)b.p[1], (__m512)c.p[1], (__m512)d.p[1]);
}

#include "stream_simd_impl.h"

}  // namespace avx512
#pragma GCC pop_options
#endif  // FA_CPU_X86

// ------------------------------------------------------------------------------------ dispatch
namespace {

using GenerateFn = void (*)(int64_t, int64_t, int64_t, float*, uint32_t*);

GenerateFn generator_for(Isa isa) {
#if FA_CPU_X86
  if (isa == Isa::kAvx512) return avx512::generate;
  if (isa == Isa::kAvx2) return avx2::generate;
#endif
  (void)isa;
  return portable::generate;
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

void randn_blocks(int64_t seed, int64_t first_block, int64_t nblocks, float* out) {
  randn_blocks_isa(active_isa(), seed, first_block, nblocks, out);
}

}  // namespace cpu
}  // namespace fastalign
