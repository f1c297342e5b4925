// csrc/cpu/stream_simd.h — the fastalign random stream (DESIGN.md section 1), vectorised for the CPU.
//
// randn_blocks(seed, first_block, nblocks, out) writes the 4 * nblocks normals of counter blocks
// [first_block, first_block + nblocks) in stream order: out[4*b + j] = normal(seed, 4*(first_block+b) + j).
// One SIMD lane owns one counter block (one Philox4x32-10 call -> four normals). Three code paths,
// selected at run time (never by compile flags, so an ahead-of-time build runs on any x86-64 CPU):
//
//   avx512  16 lanes, even/odd _mm512_mul_epu32 Philox, polynomial log and sincos     (AVX512F/DQ/BW/VL)
//   avx2     8 lanes, the same code on __m256                                          (AVX2 + FMA)
//   portable the header's scalar definition (fastalign::randn4, libm logf/sinf/cosf)
//
// Words and uniforms are bit-exact on every path. The SIMD normals use short polynomials that need no
// general range reduction (the uniform is in (0, 1], the angle is 2*pi*u with u in [0, 1)); they agree
// with the float64 evaluation of the stream to ~1e-6, like libm. `FASTALIGN_CPU_ISA=portable|avx2|avx512`
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
