// csrc/cpu/stream_simd_impl.h — the SIMD body of the stream generator, written once with GCC vector
// extensions and included by stream_simd.cpp inside one namespace per ISA (inside a
// `#pragma GCC target` region). Before including it, the ISA namespace defines:
//   kLanes (two registers' worth); native one-register types nu, ni, nf, then includes simd_pair.h
//   (vu, vi, vf: two registers, operators applied to both halves in turn: two dependency chains);
//   mulhilo(a, x, &hi, &lo)   32x32 -> 64-bit products of a constant and each lane;
//   vsqrt(x);
//   store4_interleaved(float* out, vf a, vf b, vf c, vf d)  out[4*i + {0,1,2,3}] = {a,b,c,d}[i].
// No include guard on purpose: it is included once per ISA namespace.

// Stream constants: the header's definitions (fastalign/philox.h), nothing re-derived here.

// log(x) for x in [1e-7, 1) (no zero/negative/denormal/inf handling needed): Cephes logf, ~1 ulp.
static inline vf vlog_unit(vf x) {
  const vi bits = as_i(x);
  vi e = (bits >> 23) - 126;
  const vf m = as_f((bits & 0x007fffff) | 0x3f000000);  // x = m * 2^e, m in [0.5, 1)
  const vi small = m < 0.707106781186547524f;             // -1 where m < sqrt(1/2)
  e = e + small;                                          // then x = (2m) * 2^(e-1)
  const vf t = (m - 1.0f) + as_f(small & as_i(m));          // 2m - 1 or m - 1, both exact
  const vf z = t * t;
  vf p = splat(7.0376836292e-2f);
  p = p * t - 1.1514610310e-1f;
  p = p * t + 1.1676998740e-1f;
  p = p * t - 1.2420140846e-1f;
  p = p * t + 1.4249322787e-1f;
  p = p * t - 1.6668057665e-1f;
  p = p * t + 2.0000714765e-1f;
  p = p * t - 2.4999993993e-1f;
  p = p * t + 3.3333331174e-1f;
  const vf fe = to_float(e);
  vf y = p * t * z;
  y = y + fe * -2.12194440e-4f;
  y = y - 0.5f * z;
  return (t + y) + fe * 0.693359375f;
}

// (cos, sin) of 2*pi*u for u in [0, 1). The quadrant is taken from u itself, exactly:
// q = round(4u), f = u - q/4 (exact), x = 2*pi*f in [-pi/4, pi/4]; Cephes sinf/cosf polynomials.
static inline void vsincos_2pi(vf u, vf* cos_out, vf* sin_out) {
  const float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer (ties even)
  const vf shifted = u * 4.0f + kRoundMagic;
  const vi q = as_i(shifted) - as_i(splat(kRoundMagic));  // 0..4
  const vf f = u - (shifted - kRoundMagic) * 0.25f;
  const vf x = f * ::fastalign::kTwoPi;
  const vf z = x * x;
  vf s = splat(-1.9515295891e-4f);
  s = s * z + 8.3321608736e-3f;
  s = s * z - 1.6666654611e-1f;
  s = s * z * x + x;
  vf c = splat(2.443315711809948e-5f);
  c = c * z - 1.388731625493765e-3f;
  c = c * z + 4.166664568298827e-2f;
  c = c * z * z - 0.5f * z + 1.0f;
  // cos(q*pi/2 + x), sin(q*pi/2 + x) for q mod 4 = 0: (c, s); 1: (-s, c); 2: (-c, -s); 3: (s, -c)
  const vi swap = -(q & 1);
  const vi cs = as_i(c), sn = as_i(s);
  const vi cos_bits = (swap & sn) | (~swap & cs);
  const vi sin_bits = (swap & cs) | (~swap & sn);
  *cos_out = as_f(cos_bits ^ (((q + 1) & 2) << 30));
  *sin_out = as_f(sin_bits ^ ((q & 2) << 30));
}

// uint32 word -> uniform, bit-exact with fastalign::uint_to_uniform: x ^ (x >> 31) is ~x when x < 0.
static inline vf vuniform(vu w) {
  const vi x = as_i(w);
  return to_float(x ^ (x >> 31)) * ::fastalign::kUint32ToUniform;
}

static inline void vbox_muller(vf ua, vf ub, vf* n0, vf* n1) {
  const vf floor = splat(::fastalign::kBoxMullerFloor);
  ua = select(ua < floor, floor, ua);
  const vf r = vsqrt(vlog_unit(ua) * -2.0f);
  vf c, s;
  vsincos_2pi(ub, &c, &s);
  *n0 = r * c;
  *n1 = r * s;
}

// Philox4x32-10 of kLanes consecutive blocks starting at `block` (a 64-bit counter; the low word
// may wrap inside the vector, the carry goes to the high word). round_keys[2r], [2r+1]: the key of
// round r, broadcast (the key schedule is the same for every block of a seed: computed once).
static inline void vphilox(uint64_t block, const vu* round_keys, vu* w0, vu* w1, vu* w2, vu* w3) {
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

// Normals (words == nullptr) or words (normals == nullptr) of blocks [first_block, first_block + nblocks).
static void generate(int64_t seed, int64_t first_block, int64_t nblocks, float* normals, uint32_t* words) {
  const uint32_t key0 = static_cast<uint32_t>(static_cast<uint64_t>(seed));
  const uint32_t key1 = static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32);
  vu round_keys[20];
  uint32_t k0 = key0, k1 = key1;
  for (int r = 0; r < 10; ++r) {
    round_keys[2 * r] = splat_u(k0);
    round_keys[2 * r + 1] = splat_u(k1);
    k0 += ::fastalign::kPhiloxKeyA;
    k1 += ::fastalign::kPhiloxKeyB;
  }
  alignas(64) float tail[4 * kLanes];
  for (int64_t b = 0; b < nblocks; b += kLanes) {
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
