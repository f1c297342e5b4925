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
// GCC 12 reports its own _mm512_undefined_*() placeholders (`__Y = __Y`) as (maybe-)uninitialized
// once inlined here: a known false positive of the intrinsic headers, not of this code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"  // the same placeholders, in the one-register AVX-512 code
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

// One register per vector: the partial vector at the end of a range.
namespace one {
constexpr int kRegs = 1;
#include "stream_simd_portable.h"
}  // namespace one

constexpr int kRegs = FA_REGS_PORTABLE;  // 128-bit vectors per vf (see simd_regs.h)
#define FA_TAIL_NS one
#include "stream_simd_portable.h"
#undef FA_TAIL_NS

}  // namespace portable

#if FA_CPU_X86
// --------------------------------------------------------------------------------------- AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {

// One register per vector: the partial vector at the end of a range.
namespace one {
constexpr int kRegs = 1;
#include "stream_simd_avx2.h"
}  // namespace one

constexpr int kRegs = FA_REGS_AVX2;  // __m256 per vf (see simd_regs.h)
#define FA_TAIL_NS one
#include "stream_simd_avx2.h"
#undef FA_TAIL_NS

}  // namespace avx2
#pragma GCC pop_options

// ------------------------------------------------------------------------------------- AVX-512
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
namespace avx512 {

// One register per vector: the partial vector at the end of a range.
namespace one {
constexpr int kRegs = 1;
#include "stream_simd_avx512.h"
}  // namespace one

constexpr int kRegs = FA_REGS_AVX512;  // __m512 per vf (see simd_regs.h)
#define FA_TAIL_NS one
#include "stream_simd_avx512.h"
#undef FA_TAIL_NS

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
