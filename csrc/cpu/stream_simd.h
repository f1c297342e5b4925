// csrc/cpu/stream_simd.h — the fastalign random stream (docs/design.md#random-stream), vectorised for the CPU.
//
// randn_blocks(seed, first_block, nblocks, out) writes the 4 * nblocks normals of counter blocks
// [first_block, first_block + nblocks) in stream order: out[4*b + j] = normal(seed, 4*(first_block+b) + j).
// One SIMD lane owns one counter block (one Philox4x32-10 call -> four normals). Three code paths,
// selected at run time (never by compile flags, so an ahead-of-time build runs on any x86-64 CPU):
//
//   avx512   Philox on 64-bit lanes (_mm512_mul_epu32, no split/merge shuffles) on __m512 (AVX512F/DQ/BW/VL)
//   avx2     the same code on __m256 where the compiler may use AVX-512VL, else even/odd
//            _mm256_mul_epu32 Philox on 32-bit lanes, hi words in swapped lane order    (AVX2 + FMA)
//   portable the same code in plain GCC/Clang vector extensions on 128-bit vectors: SSE2 on any
//            x86-64, NEON on aarch64 (whatever the compiler targets; no intrinsics)
//
// Words and uniforms are bit-exact on every path. Every path computes the normals with the short
// polynomials of fastalign/box_muller_poly.h (no general range reduction: the uniform is in (0, 1],
// the angle is 2*pi*u with u in [0, 1)); they agree with the float64 evaluation of the stream to ~1e-6,
// like libm (the exhaustive bound is in bench/RESULTS.md). `FASTALIGN_CPU_ISA=portable|avx2|avx512`
// caps the path (for tests and for A/B timing); the default is the best the CPU supports.
#pragma once
#include <stdint.h>

namespace fastalign {
namespace cpu {

enum class Isa : int { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// The best path this CPU supports.
Isa best_isa();
// The path in use: min(best_isa(), $FASTALIGN_CPU_ISA or set_isa()).
Isa active_isa();
// Caps the path (clamped to what the CPU supports); returns the path now in use.
Isa set_isa(Isa requested);
const char* isa_name(Isa isa);
// Parses "portable" / "avx2" / "avx512" / "auto" (auto = best); returns false on anything else.
bool parse_isa(const char* name, Isa* out);

// out[4*b + j] = normal(seed, 4*(first_block + b) + j) for b < nblocks (writes exactly 4*nblocks floats).
void randn_blocks(int64_t seed, int64_t first_block, int64_t nblocks, float* out);
void randn_blocks_isa(Isa isa, int64_t seed, int64_t first_block, int64_t nblocks, float* out);
// out[4*b + j] = Philox word j of block first_block + b (the words the normals are made from).
void words_blocks_isa(Isa isa, int64_t seed, int64_t first_block, int64_t nblocks, uint32_t* out);

// The two halves of the stream's Box-Muller on path `isa`, for the exhaustive accuracy test
// (csrc/tests/test_stream_simd.cpp): r[i] = sqrt(-2 ln max(1e-7, u[i])) and (c[i], s[i]) = (cos, sin) of
// float32(2 pi) * u[i], for u[i] in [0, 1], computed by the very code the normals come from.
void box_muller_parts_isa(Isa isa, const float* u, int64_t n, float* r, float* c, float* s);

// aisp_perturb's loop with the normals taken from registers (no buffer in between), float32:
//   out[e] = (h[e] + u[e]) + sigma * normal(seed, k0 + e)   for e < len,
// the sum rounded once (fma) when `fma`, else the product rounded first: pass kBuildFusesMulAdd, so the
// result is bit for bit what the caller's own loop `h[e] + u[e] + sigma * eps[e]` gives in its build
// (-ffp-contract=fast fuses it exactly where the build has FMA). eps_out (optional) gets the normals.
void perturb_range(int64_t seed, int64_t k0, int64_t len, const float* h, const float* u, float sigma, bool fma,
                   float* out, float* eps_out);
void perturb_range_isa(Isa isa, int64_t seed, int64_t k0, int64_t len, const float* h, const float* u, float sigma,
                       bool fma, float* out, float* eps_out);
// Whether the including file's build turns a * b + c into one fma (a per-file constant).
#if defined(__FP_FAST_FMAF)
constexpr bool kBuildFusesMulAdd = true;
#else
constexpr bool kBuildFusesMulAdd = false;
#endif

// Scratch floats a caller must provide to randn_range for `len` normals.
constexpr int64_t randn_scratch_size(int64_t len) { return len + 8; }

// Normals of logical indices [k0, k0 + len): returns p with p[e] = normal(seed, k0 + e), e < len.
// `scratch` holds at least randn_scratch_size(len) floats; p points into it (k0 need not be a
// multiple of 4: the partial blocks at both ends are generated whole and the extra values skipped).
inline const float* randn_range(int64_t seed, int64_t k0, int64_t len, float* scratch) {
  const int64_t first_block = k0 >> 2;
  const int64_t head = k0 & 3;
  const int64_t nblocks = (head + len + 3) >> 2;
  randn_blocks(seed, first_block, nblocks, scratch);
  return scratch + head;
}

}  // namespace cpu
}  // namespace fastalign
