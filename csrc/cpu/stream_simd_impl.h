// csrc/cpu/stream_simd_impl.h — the SIMD body of the stream generator, written once with GCC vector
// extensions and included by stream_simd.cpp inside one namespace per ISA (inside a
// `#pragma GCC target` region, except the portable path). Before including it, the ISA namespace defines:
//   kRegs and the native one-register types nu, ni, nf, then includes simd_regs.h (vu, vi, vf: kRegs
//   registers, kLanes lanes, operators applied to each register in turn: kRegs dependency chains);
//   mulhilo(a, x, &hi, &lo)   32x32 -> 64-bit products of a constant and each lane;
//   vsqrt(x);
//   store4_interleaved(float* out, vf a, vf b, vf c, vf d)  out[4*i + {0,1,2,3}] = {a,b,c,d}[i];
//   transpose4(vf a, vf b, vf c, vf d, nf* t)  the 4 * kLanes values out[4*i + {0,1,2,3}] = {a,b,c,d}[i]
//                                              in stream order: t[q] holds out[q*kRegLanes ...];
//   fmadd(nf a, nf b, nf c)   a * b + c rounded once.
// FA_TAIL_NS (defined for the kRegs > 1 inclusion): the namespace of the same code on one register,
// which generate() and perturb() hand the last, partial vector of a range to when it needs at most
// kTailRegs registers (the path's choice: one-register vectors are latency-bound).
// No include guard on purpose: it is included twice per ISA namespace (kRegs and one register).

// Stream constants: the header's definitions (fastalign/philox.h), nothing re-derived here; the
// log and sincos polynomials: fastalign/box_muller_poly.h, shared with the scalar code.

// uint32 word -> uniform, bit-exact with fastalign::uint_to_uniform: x ^ (x >> 31) is ~x when x < 0.
static inline __attribute__((always_inline)) vf vuniform(vu w) {
  const vi x = as_i(w);
  return to_float(x ^ (x >> 31)) * ::fastalign::kUint32ToUniform;
}

// Box-Muller with the polynomials of fastalign/box_muller_poly.h (the scalar definition is philox.h's).
static inline __attribute__((always_inline)) void vbox_muller(vf ua, vf ub, vf* n0, vf* n1) {
  const vf r = vsqrt(::fastalign::poly::neg2_log(vmax(ua, ::fastalign::kBoxMullerFloor)));
  vf c, s;
  ::fastalign::poly::sincos_2pi(ub, &c, &s);
  *n0 = r * c;
  *n1 = r * s;
}

// The two halves of vbox_muller on given uniforms (stream_simd.h, box_muller_parts_isa).
[[maybe_unused]] static void box_muller_parts(const float* u, int64_t n, float* r, float* c, float* s) {
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t m = n - i < kLanes ? n - i : kLanes;
    vf x = splat(0.0f), vr, vc, vs;
    __builtin_memcpy(&x, u + i, sizeof(float) * m);
    vr = vsqrt(::fastalign::poly::neg2_log(vmax(x, ::fastalign::kBoxMullerFloor)));
    ::fastalign::poly::sincos_2pi(x, &vc, &vs);
    __builtin_memcpy(r + i, &vr, sizeof(float) * m);
    __builtin_memcpy(c + i, &vc, sizeof(float) * m);
    __builtin_memcpy(s + i, &vs, sizeof(float) * m);
  }
}

#if defined(FA_PHILOX_WIDE)
// The same Philox4x32-10 on 64-bit lanes (x86 paths; the namespace defines nw, a vector of uint64 of
// one register, mul_even(x, a) = the 64-bit products of the low halves, hi_to_lo(p) = p >> 32 and
// join_even_odd(e, o): the low halves of e in the even 32-bit lanes and those of o in the odd ones).
// Each 64-bit lane holds one block's counter word in its low half (the high half is never read:
// pmuludq ignores it and join drops it), so a product needs no shuffle or blend to split it: its low
// half is the lo word and one shift gives the hi word. Two wide registers (even and odd blocks) make
// one 32-bit-lane register of kRegLanes consecutive blocks, joined once after the ten rounds; the
// 32-bit-lane version (mulhilo) spends 2 shifts and 2 blends per multiply on splitting and merging.
static inline __attribute__((always_inline)) void vphilox(uint64_t block, const vu* round_keys, vu* w0, vu* w1, vu* w2, vu* w3) {
  constexpr int kW = 2 * kRegs;                       // wide registers per word
  constexpr int kWLanes = kRegLanes / 2;              // 64-bit lanes per register
  nw c0[kW], c1[kW], c2[kW], c3[kW];
  for (int j = 0; j < kW; ++j) {
    nw idx;  // register j: blocks k*kRegLanes + parity + 2*i, k = j/2, parity = j%2
    for (int i = 0; i < kWLanes; ++i) idx[i] = static_cast<uint64_t>((j >> 1) * kRegLanes + (j & 1) + 2 * i);
    const nw c = idx + block;  // the full 64-bit counter: lo word in the low half, hi word above
    c0[j] = c;
    c1[j] = c >> 32;
    c2[j] = nw{} + 0;
    c3[j] = nw{} + 0;
  }
  const nw ma = nw{} + static_cast<uint64_t>(::fastalign::kPhiloxRoundA);
  const nw mb = nw{} + static_cast<uint64_t>(::fastalign::kPhiloxRoundB);
  for (int r = 0; r < 10; ++r) {
    const nw k0 = (nw)round_keys[2 * r].p[0], k1 = (nw)round_keys[2 * r + 1].p[0];
    for (int j = 0; j < kW; ++j) {
      const nw p0 = mul_even(c0[j], ma), p2 = mul_even(c2[j], mb);
      c0[j] = hi_to_lo(p2) ^ c1[j] ^ k0;
      c1[j] = p2;
      c2[j] = hi_to_lo(p0) ^ c3[j] ^ k1;
      c3[j] = p0;
    }
  }
  for (int k = 0; k < kRegs; ++k) {
    w0->p[k] = join_even_odd(c0[2 * k], c0[2 * k + 1]);
    w1->p[k] = join_even_odd(c1[2 * k], c1[2 * k + 1]);
    w2->p[k] = join_even_odd(c2[2 * k], c2[2 * k + 1]);
    w3->p[k] = join_even_odd(c3[2 * k], c3[2 * k + 1]);
  }
}
#elif defined(FA_PHILOX_HALF_SWAP)
// The 32-bit-lane rounds with the hi words in a swapped lane order (plain AVX2: 16 registers, no
// three-way XOR). The namespace defines mulhilo_swap(a, x, &hi, &lo): lo as mulhilo's, hi with the
// middle two lanes of every 4 swapped (one vshufps instead of a shift and a blend; the swap S is its
// own inverse), and unswap(x) = S(x). The order of c0, c2 then alternates between the blocks' own
// (even rounds) and S (odd rounds), c1, c3 (last round's lo words) are a round behind, so each XOR
// meets its operands in one order; c1's starting carry is laid out in S order to meet round 0's hi
// word, and after the 10th round c0, c2 are in order and c1, c3 need one unswap each.
static inline __attribute__((always_inline)) void vphilox(uint64_t block, const vu* round_keys, vu* w0, vu* w1, vu* w2, vu* w3) {
  const uint32_t base_lo = static_cast<uint32_t>(block);
  vu c0 = lane_index() + base_lo;
  vu c1 = splat_u(static_cast<uint32_t>(block >> 32)) - as_u(unswap(c0) < base_lo);  // + carry, S order
  vu c2 = splat_u(0u), c3 = splat_u(0u);
#pragma GCC unroll 10  // whole: the c0..c3 renaming then costs no register moves or spill copies
  for (int r = 0; r < 10; ++r) {
    vu hi0, lo0, hi2, lo2;
    mulhilo_swap(::fastalign::kPhiloxRoundA, c0, &hi0, &lo0);
    mulhilo_swap(::fastalign::kPhiloxRoundB, c2, &hi2, &lo2);
    c0 = hi2 ^ c1 ^ round_keys[2 * r];
    c1 = lo2;
    c2 = hi0 ^ c3 ^ round_keys[2 * r + 1];
    c3 = lo0;
  }
  *w0 = c0;
  *w1 = unswap(c1);
  *w2 = c2;
  *w3 = unswap(c3);
}
#else
// Philox4x32-10 of kLanes consecutive blocks starting at `block` (a 64-bit counter; the low word
// may wrap inside the vector, the carry goes to the high word). round_keys[2r], [2r+1]: the key of
// round r, broadcast (the key schedule is the same for every block of a seed: computed once).
static inline __attribute__((always_inline)) void vphilox(uint64_t block, const vu* round_keys, vu* w0, vu* w1, vu* w2, vu* w3) {
  const uint32_t base_lo = static_cast<uint32_t>(block);
  vu c0 = lane_index() + base_lo;
  vu c1 = splat_u(static_cast<uint32_t>(block >> 32)) - as_u(c0 < base_lo);  // + carry
  vu c2 = splat_u(0u), c3 = splat_u(0u);
  for (int r = 0; r < 10; ++r) {
    vu hi0, lo0, hi2, lo2;
    mulhilo(::fastalign::kPhiloxRoundA, c0, &hi0, &lo0);
    mulhilo(::fastalign::kPhiloxRoundB, c2, &hi2, &lo2);
    c0 = hi2 ^ c1 ^ round_keys[2 * r];
    c1 = lo2;
    c2 = hi0 ^ c3 ^ round_keys[2 * r + 1];
    c3 = lo0;
  }
  *w0 = c0;
  *w1 = c1;
  *w2 = c2;
  *w3 = c3;
}
#endif  // FA_PHILOX_WIDE

// The key schedule of `seed`, broadcast: round_keys[2r], [2r+1] = the key of round r.
static inline __attribute__((always_inline)) void make_round_keys(int64_t seed, vu* round_keys) {
  uint32_t k0 = static_cast<uint32_t>(static_cast<uint64_t>(seed));
  uint32_t k1 = static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32);
  for (int r = 0; r < 10; ++r) {
    round_keys[2 * r] = splat_u(k0);
    round_keys[2 * r + 1] = splat_u(k1);
    k0 += ::fastalign::kPhiloxKeyA;
    k1 += ::fastalign::kPhiloxKeyB;
  }
}

// Normals (words == nullptr) or words (normals == nullptr) of blocks [first_block, first_block + nblocks).
static void generate(int64_t seed, int64_t first_block, int64_t nblocks, float* normals, uint32_t* words) {
  vu round_keys[20];
  make_round_keys(seed, round_keys);
  alignas(64) float tail[4 * kLanes];
  for (int64_t b = 0; b < nblocks; b += kLanes) {
#if defined(FA_TAIL_NS)
    if (nblocks - b < kLanes && nblocks - b <= kTailRegs * kRegLanes) {  // the last, partial vector: one
                                                                         // register at a time
      FA_TAIL_NS::generate(seed, first_block + b, nblocks - b, normals != nullptr ? normals + 4 * b : nullptr,
                           words != nullptr ? words + 4 * b : nullptr);
      break;
    }
#endif
    vu w0, w1, w2, w3;
    vphilox(static_cast<uint64_t>(first_block + b), round_keys, &w0, &w1, &w2, &w3);
    const int64_t rem = nblocks - b;
    const int64_t offset = 4 * b;
    if (words != nullptr) {
      float* dst = rem >= kLanes ? reinterpret_cast<float*>(words + offset) : tail;
      store4_interleaved(dst, as_f(w0), as_f(w1), as_f(w2), as_f(w3));
      if (rem < kLanes) __builtin_memcpy(words + offset, tail, sizeof(float) * 4 * rem);
      continue;
    }
    vf n0, n1, n2, n3;
    vbox_muller(vuniform(w0), vuniform(w1), &n0, &n1);
    vbox_muller(vuniform(w2), vuniform(w3), &n2, &n3);
    float* dst = rem >= kLanes ? normals + offset : tail;
    store4_interleaved(dst, n0, n1, n2, n3);
    if (rem < kLanes) __builtin_memcpy(normals + offset, tail, sizeof(float) * 4 * rem);
  }
}

// Keeps x as a rounded value: the compiler may not fuse the product that made it into a later add.
#if defined(__x86_64__) || defined(__i386__)
#define FA_ROUNDED(x) __asm__("" : "+x"(x))
#elif defined(__aarch64__)
#define FA_ROUNDED(x) __asm__("" : "+w"(x))
#else
#define FA_ROUNDED(x) __asm__("" : "+m"(x))
#endif

// aisp_perturb's element, as its loop in the caller's build computes it: (h + u) + sigma * eps,
// with one rounding (fma) where that build contracts (kFma), else the product rounded first.
template <bool kFma>
static inline __attribute__((always_inline)) nf perturb_value(nf h, nf u, nf sigma, nf eps) {
  if (kFma) return fmadd(sigma, eps, h + u);
  nf p = sigma * eps;
  FA_ROUNDED(p);
  return (h + u) + p;
}
template <bool kFma>
static inline __attribute__((always_inline)) float perturb_value(float h, float u, float sigma, float eps) {
  if (kFma) return __builtin_fmaf(sigma, eps, h + u);
  float p = sigma * eps;
  FA_ROUNDED(p);
  return (h + u) + p;
}

// stream_simd.h's perturb_range: the normals of [k0, k0 + len) go from registers (in stream order,
// after the same transpose the stores use) straight into out = h + u + sigma * eps; eps_out gets them
// too when kEps (for a by-product the caller sums itself). The normals are generate()'s, bit for bit.
template <bool kFma, bool kEps>
static void perturb(int64_t seed, int64_t k0, int64_t len, const float* h, const float* u, float sigma, float* out,
                    float* eps_out) {
  vu round_keys[20];
  make_round_keys(seed, round_keys);
  const int64_t first_block = k0 >> 2, head = k0 & 3;
  const int64_t nblocks = (head + len + 3) >> 2;
  const nf vsigma = nf{} + sigma;
  for (int64_t b = 0; b < nblocks; b += kLanes) {
    const int64_t e0 = 4 * b - head;  // element of out that this vector's first normal belongs to
#if defined(FA_TAIL_NS)
    if (e0 + 4 * kLanes > len && len - e0 <= 4 * kTailRegs * kRegLanes) {  // the last, partial vector:
                                                                           // one register at a time
      const int64_t s = e0 < 0 ? 0 : e0;
      FA_TAIL_NS::perturb<kFma, kEps>(seed, k0 + s, len - s, h + s, u + s, sigma, out + s,
                                      kEps ? eps_out + s : nullptr);
      break;
    }
#endif
    vu w0, w1, w2, w3;
    vphilox(static_cast<uint64_t>(first_block + b), round_keys, &w0, &w1, &w2, &w3);
    vf n0, n1, n2, n3;
    vbox_muller(vuniform(w0), vuniform(w1), &n0, &n1);
    vbox_muller(vuniform(w2), vuniform(w3), &n2, &n3);
    if (e0 >= 0 && e0 + 4 * kLanes <= len) {
      nf t[4 * kRegs];
      transpose4(n0, n1, n2, n3, t);
      for (int q = 0; q < 4 * kRegs; ++q) {
        const int64_t e = e0 + q * kRegLanes;
        nf hv, uv;
        __builtin_memcpy(&hv, h + e, sizeof(nf));
        __builtin_memcpy(&uv, u + e, sizeof(nf));
        const nf o = perturb_value<kFma>(hv, uv, vsigma, t[q]);
        __builtin_memcpy(out + e, &o, sizeof(nf));
        if (kEps) __builtin_memcpy(eps_out + e, &t[q], sizeof(nf));
      }
    } else {  // the partial vectors at both ends
      alignas(64) float tmp[4 * kLanes];
      store4_interleaved(tmp, n0, n1, n2, n3);
      const int64_t lo = e0 < 0 ? -e0 : 0, hi = len - e0 < 4 * kLanes ? len - e0 : 4 * kLanes;
      for (int64_t m = lo; m < hi; ++m) {
        const int64_t e = e0 + m;
        out[e] = perturb_value<kFma>(h[e], u[e], sigma, tmp[m]);
        if (kEps) eps_out[e] = tmp[m];
      }
    }
  }
}
#undef FA_ROUNDED
