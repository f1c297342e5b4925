// csrc/tests/test_stream.cpp — host-side check of the shared per-element math (csrc/include/fastalign).
//
// Built with plain g++ by tests/test_cpp_header.py (no torch). It
//   1. checks the published Random123 known-answer vectors of Philox4x32 (10 rounds, and 7 rounds on
//      the pi-digits input), exiting non-zero on a mismatch;
//   2. prints stream values for seeds/offsets (incl. > 2^32) that the pytest compares with
//      fastalign.backends.rng:  "W seed k word" / "U seed k uniform_bits" / "N seed k normal" (libm) /
//      "P seed k normal" (the polynomials of fastalign/box_muller_poly.h, scalar).
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "fastalign/box_muller_poly.h"
#include "fastalign/clip.h"
#include "fastalign/philox.h"

namespace {

struct KnownAnswer {
  uint32_t ctr[4];
  uint32_t key[2];
  int rounds;
  uint32_t expect[4];
};

const KnownAnswer kKnownAnswers[] = {
    {{0u, 0u, 0u, 0u}, {0u, 0u}, 10, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu}, 10,
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u}, 10,
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u}, 7,
     {0x4dfccabau, 0x190a87f0u, 0xc47362bau, 0xb6b5242au}},
};

}  // namespace

int main() {
  int failures = 0;
  for (const KnownAnswer& ka : kKnownAnswers) {
    const fastalign::Philox4 w =
        fastalign::philox4x32(ka.ctr[0], ka.ctr[1], ka.ctr[2], ka.ctr[3], ka.key[0], ka.key[1], ka.rounds);
    if (memcmp(w.w, ka.expect, sizeof(ka.expect)) != 0) {
      fprintf(stderr, "KAT FAIL rounds=%d ctr=%08x...: got %08x %08x %08x %08x, expected %08x %08x %08x %08x\n",
              ka.rounds, ka.ctr[0], w.w[0], w.w[1], w.w[2], w.w[3], ka.expect[0], ka.expect[1], ka.expect[2],
              ka.expect[3]);
      ++failures;
    }
  }
  printf("KAT %d/%d\n", static_cast<int>(sizeof(kKnownAnswers) / sizeof(kKnownAnswers[0])) - failures,
         static_cast<int>(sizeof(kKnownAnswers) / sizeof(kKnownAnswers[0])));

  // clip coefficient: min(1, max_norm / (norm + 1e-6))
  if (fastalign::clip_coef(0.5f, 1.0f) != 1.0f || fastalign::clip_coef(4.0f, 1.0f) != 1.0f / (4.0f + 1e-6f)) {
    fprintf(stderr, "clip_coef FAIL\n");
    ++failures;
  }

  const int64_t seeds[] = {0, 1, 42, 0x7fffffffLL, 0x123456789abLL, (1LL << 62) + 5};
  const int64_t starts[] = {0, 1, 1000003, (1LL << 32) - 6, (1LL << 34) + 1, (1LL << 60) + 3};
  for (int64_t seed : seeds) {
    for (int64_t start : starts) {
      for (int64_t e = 0; e < 9; ++e) {
        const int64_t k = start + e;
        const fastalign::Philox4 w = fastalign::stream_words(seed, k >> 2);
        const uint32_t word = w.w[k & 3];
        const float u = fastalign::uint_to_uniform(word);
        uint32_t u_bits;
        memcpy(&u_bits, &u, sizeof(u_bits));
        printf("W %lld %lld %u\n", static_cast<long long>(seed), static_cast<long long>(k), word);
        printf("U %lld %lld %u\n", static_cast<long long>(seed), static_cast<long long>(k), u_bits);
        printf("N %lld %lld %.9e\n", static_cast<long long>(seed), static_cast<long long>(k),
               static_cast<double>(fastalign::normal_at(seed, k)));
        const int64_t pair = (k & 3) >> 1;  // Box-Muller pair of words (0, 1) or (2, 3)
        float n[2];
        fastalign::poly::box_muller(fastalign::uint_to_uniform(w.w[2 * pair]),
                                    fastalign::uint_to_uniform(w.w[2 * pair + 1]), &n[0], &n[1]);
        printf("P %lld %lld %.9e\n", static_cast<long long>(seed), static_cast<long long>(k),
               static_cast<double>(n[k & 1]));
      }
    }
  }
  return failures == 0 ? 0 : 1;
}
