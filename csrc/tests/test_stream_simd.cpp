// csrc/tests/test_stream_simd.cpp — the CPU stream generator (csrc/cpu/stream_simd.cpp) on every path
// this CPU has, without torch: built and run by tests/test_cpp_stream.py (natively, and for aarch64
// under qemu-user when the cross toolchain is present).
//
//   1. words: bit-exact with the header's definition (fastalign::stream_words), ragged counts, a
//      counter whose low word wraps inside a vector;
//   2. normals: within 2e-6 of the float64 evaluation of the same words; perturb_range (the normals
//      from registers into aisp_perturb's out) bit for bit this file's own loop on those normals;
//   3. the Box-Muller polynomials over the uniforms: every value uint_to_uniform can return (the
//      2^24 multiples of 2^-31 below 2^-7 and every float32 in [2^-7, 1]: 75.5 million), or every
//      `stride`-th of them. Prints, per path, the worst |r - r64| and |cos - cos64|, |sin - sin64| and
//      the bound they give on |normal - float64 reference|:
//        max over ua of  |r - r64| (1 + E) + r64 E + ulp(r (1 + E)) / 2,   E = worst sincos error
//      (the last term: the rounding of the product r * cos). Fails if the bound exceeds 2e-6.
//
// Usage: test_stream_simd [--stride N | --exhaustive]   (default stride 97)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "fastalign/philox.h"
#include "stream_simd.h"

namespace {

using fastalign::cpu::Isa;
constexpr double kTolerance = 2e-6;

double radius64(float u) { return sqrt(-2.0 * log(static_cast<double>(u < 1.0e-7f ? 1.0e-7f : u))); }
double angle64(float u) { return static_cast<double>(fastalign::kTwoPi) * static_cast<double>(u); }

int check_stream(Isa isa) {
  struct Case { int64_t seed, first_block, nblocks; };
  const Case cases[] = {{0, 0, 1000}, {7, 1, 517}, {(1LL << 40) + 11, (1LL << 32) - 20, 301},
                        {(1LL << 62) + 1, 1LL << 58, 129}};
  int failures = 0;
  double worst = 0.0;
  for (const Case& c : cases) {
    std::vector<uint32_t> words(4 * c.nblocks);
    std::vector<float> normals(4 * c.nblocks);
    fastalign::cpu::words_blocks_isa(isa, c.seed, c.first_block, c.nblocks, words.data());
    fastalign::cpu::randn_blocks_isa(isa, c.seed, c.first_block, c.nblocks, normals.data());
    for (int64_t b = 0; b < c.nblocks; ++b) {
      const fastalign::Philox4 w = fastalign::stream_words(c.seed, c.first_block + b);
      if (memcmp(w.w, &words[4 * b], sizeof(w.w)) != 0) {
        fprintf(stderr, "%s: words of block %lld (seed %lld) differ\n", fastalign::cpu::isa_name(isa),
                static_cast<long long>(c.first_block + b), static_cast<long long>(c.seed));
        ++failures;
      }
      for (int j = 0; j < 4; j += 2) {
        const float ua = fastalign::uint_to_uniform(w.w[j]), ub = fastalign::uint_to_uniform(w.w[j + 1]);
        const double r = radius64(ua), th = angle64(ub);
        worst = fmax(worst, fabs(normals[4 * b + j] - r * cos(th)));
        worst = fmax(worst, fabs(normals[4 * b + j + 1] - r * sin(th)));
      }
    }
  }
  printf("STREAM %s words ok=%d normals max_err=%.3e\n", fastalign::cpu::isa_name(isa), failures == 0, worst);
  return failures + (worst <= kTolerance ? 0 : 1);
}

// perturb_range (aisp_perturb's float32 loop on the normals in registers): out bit for bit what this
// file's own loop `h + u + sigma * eps` gives on the path's normals (same build flags, so the same
// contraction: kBuildFusesMulAdd), eps_out bit for bit the path's normals; ragged starts and lengths.
int check_perturb(Isa isa) {
  struct Case { int64_t seed, k0, len; };
  const Case cases[] = {{0, 0, 2048}, {7, 1, 37}, {11, 2, 1}, {3, 3, 1000}, {5, 4, 5}, {(1LL << 40) + 9, (1LL << 34) - 6, 517}};
  const float sigma = 0.37f;
  int failures = 0;
  for (const Case& c : cases) {
    std::vector<float> h(c.len), u(c.len), out(c.len, -1.0f), out_ref(c.len), eps_out(c.len, -1.0f);
    std::vector<float> scratch(fastalign::cpu::randn_scratch_size(c.len));
    for (int64_t e = 0; e < c.len; ++e) {
      h[e] = 0.013f * static_cast<float>((e * 7919) % 301) - 1.9f;
      u[e] = 0.0071f * static_cast<float>((e * 104729) % 97) - 0.3f;
    }
    const int64_t head = c.k0 & 3;
    fastalign::cpu::randn_blocks_isa(isa, c.seed, c.k0 >> 2, (head + c.len + 3) >> 2, scratch.data());
    const float* eps = scratch.data() + head;
    for (int64_t e = 0; e < c.len; ++e) out_ref[e] = h[e] + u[e] + sigma * eps[e];
    for (int with_eps = 0; with_eps < 2; ++with_eps) {
      fastalign::cpu::perturb_range_isa(isa, c.seed, c.k0, c.len, h.data(), u.data(), sigma,
                                        fastalign::cpu::kBuildFusesMulAdd, out.data(),
                                        with_eps ? eps_out.data() : nullptr);
      if (memcmp(out.data(), out_ref.data(), sizeof(float) * c.len) != 0 ||
          (with_eps && memcmp(eps_out.data(), eps, sizeof(float) * c.len) != 0)) {
        fprintf(stderr, "%s: perturb_range (seed %lld, k0 %lld, len %lld, eps_out %d) differs\n",
                fastalign::cpu::isa_name(isa), static_cast<long long>(c.seed), static_cast<long long>(c.k0),
                static_cast<long long>(c.len), with_eps);
        ++failures;
      }
    }
  }
  printf("PERTURB %s ok=%d fma=%d\n", fastalign::cpu::isa_name(isa), failures == 0,
         static_cast<int>(fastalign::cpu::kBuildFusesMulAdd));
  return failures;
}

// The uniforms, in increasing order: index i < 2^24 -> i * 2^-31, then the float32s from 2^-7 to 1.
constexpr int64_t kSmall = 1LL << 24;
const uint32_t kBitsFrom = 0x3c000000u;  // 2^-7
const uint32_t kBitsTo = 0x3f800000u;    // 1.0
constexpr int64_t uniform_count() { return kSmall + (kBitsTo - kBitsFrom) + 1; }
float uniform_at(int64_t i) {
  if (i < kSmall) return static_cast<float>(i) * fastalign::kUint32ToUniform;
  const uint32_t bits = kBitsFrom + static_cast<uint32_t>(i - kSmall);
  float u;
  memcpy(&u, &bits, sizeof(u));
  return u;
}

// pass 0: worst sincos error E; pass 1: worst radius error and the bound on the normal's error.
int check_polynomials(Isa isa, int64_t stride) {
  const int64_t chunk = 1 << 16;
  std::vector<float> u(chunk), r(chunk), c(chunk), s(chunk);
  double e_cs = 0.0, e_r = 0.0, bound = 0.0;
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t start = 0; start < uniform_count(); start += chunk * stride) {
      int64_t n = 0;
      for (int64_t i = start; i < uniform_count() && n < chunk; i += stride) u[n++] = uniform_at(i);
      fastalign::cpu::box_muller_parts_isa(isa, u.data(), n, r.data(), c.data(), s.data());
      for (int64_t k = 0; k < n; ++k) {
        if (pass == 0) {
          if (u[k] >= 1.0f) continue;  // the angle's uniform is below 1 (1 comes from the radius' only)
          const double th = angle64(u[k]);
          e_cs = fmax(e_cs, fmax(fabs(c[k] - cos(th)), fabs(s[k] - sin(th))));
        } else {
          const double r64 = radius64(u[k]), dr = fabs(r[k] - r64);
          e_r = fmax(e_r, dr);
          const float top = static_cast<float>(r[k] * (1.0 + e_cs));
          const double half_ulp = top > 0.0f ? ldexp(1.0, ilogbf(top) - 24) : 0.0;
          bound = fmax(bound, dr * (1.0 + e_cs) + r64 * e_cs + half_ulp);
        }
      }
    }
  }
  printf("POLY %s stride=%lld uniforms=%lld radius_err=%.3e sincos_err=%.3e normal_bound=%.3e\n",
         fastalign::cpu::isa_name(isa), static_cast<long long>(stride),
         static_cast<long long>((uniform_count() + stride - 1) / stride), e_r, e_cs, bound);
  return bound <= kTolerance ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t stride = 97;
  for (int a = 1; a < argc; ++a) {
    if (strcmp(argv[a], "--exhaustive") == 0) stride = 1;
    else if (strcmp(argv[a], "--stride") == 0 && a + 1 < argc) stride = atoll(argv[++a]);
    else { fprintf(stderr, "usage: %s [--stride N | --exhaustive]\n", argv[0]); return 2; }
  }
  int failures = 0;
  for (int isa = 0; isa <= static_cast<int>(fastalign::cpu::best_isa()); ++isa) {
    failures += check_stream(static_cast<Isa>(isa));
    failures += check_perturb(static_cast<Isa>(isa));
    failures += check_polynomials(static_cast<Isa>(isa), stride);
  }
  return failures == 0 ? 0 : 1;
}
