// fastalign/philox.h — the random stream of docs/design.md#random-stream, one definition for every native backend.
//
//   normal(seed, k): c = k >> 2, j = k & 3
//     words = Philox4x32-10(counter = (lo32(c), hi32(c), 0, 0), key = (lo32(seed), hi32(seed)))
//     u_i   = uniform(words[i]);  (n0, n1) = box_muller(u0, u1);  (n2, n3) = box_muller(u2, u3)
//     normal(seed, k) = n_j
//
// This is bit-for-bit the layout of Triton's tl.randint4x / tl.rand4x, and tl.randn4x up to libm ulps.
#pragma once
#include <math.h>
#include "fastalign/common.h"

namespace fastalign {

constexpr uint32_t kPhiloxRoundA = 0xD2511F53u;  // multiplier for word 0
constexpr uint32_t kPhiloxRoundB = 0xCD9E8D57u;  // multiplier for word 2
constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u;    // key bump, word 0 (golden ratio)
constexpr uint32_t kPhiloxKeyB = 0xBB67AE85u;    // key bump, word 1 (sqrt(3) - 1)
constexpr float kUint32ToUniform = 4.6566127342e-10f;  // 2^-31 as Triton writes it
constexpr float kBoxMullerFloor = 1.0e-7f;
constexpr float kTwoPi = 6.283185307179586f;

struct Philox4 {
  uint32_t w[4];
};

FA_HOST_DEVICE inline uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(product >> 32);
  return static_cast<uint32_t>(product);
}

// Philox4x32 with `rounds` rounds (10 for the stream). Counter (c0..c3), key (k0, k1).
FA_HOST_DEVICE inline Philox4 philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                         uint32_t k0, uint32_t k1, int rounds = 10) {
  for (int r = 0; r < rounds; ++r) {
    uint32_t hi0, hi2;
    const uint32_t lo0 = mulhilo32(kPhiloxRoundA, c0, &hi0);
    const uint32_t lo2 = mulhilo32(kPhiloxRoundB, c2, &hi2);
    c0 = hi2 ^ c1 ^ k0;
    c1 = lo2;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kPhiloxKeyA;
    k1 += kPhiloxKeyB;
  }
  Philox4 out;
  out.w[0] = c0;
  out.w[1] = c1;
  out.w[2] = c2;
  out.w[3] = c3;
  return out;
}

// The four words of the stream for counter block c = k >> 2 (a non-negative int64).
FA_HOST_DEVICE inline Philox4 stream_words(int64_t seed, int64_t block) {
  const uint64_t s = static_cast<uint64_t>(seed);
  const uint64_t c = static_cast<uint64_t>(block);
  return philox4x32(static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), 0u, 0u,
                    static_cast<uint32_t>(s), static_cast<uint32_t>(s >> 32));
}

// uint32 word -> float in [0, 1): bitcast to int32, fold negatives with ~x, scale by 2^-31.
FA_HOST_DEVICE inline float uint_to_uniform(uint32_t word) {
  int32_t x = static_cast<int32_t>(word);
  if (x < 0) x = ~x;
  return static_cast<float>(x) * kUint32ToUniform;
}

// Box-Muller on one pair of uniforms: (r cos th, r sin th), r = sqrt(-2 log max(1e-7, ua)), th = 2 pi ub.
FA_HOST_DEVICE inline void box_muller(float ua, float ub, float* n0, float* n1) {
  const float r = sqrtf(-2.0f * logf(fmaxf(kBoxMullerFloor, ua)));
  const float th = kTwoPi * ub;
  *n0 = r * cosf(th);
  *n1 = r * sinf(th);
}

// The four normals of counter block `block`: normal(seed, 4*block + j) = out[j].
FA_HOST_DEVICE inline void randn4(int64_t seed, int64_t block, float out[4]) {
  const Philox4 w = stream_words(seed, block);
  box_muller(uint_to_uniform(w.w[0]), uint_to_uniform(w.w[1]), &out[0], &out[1]);
  box_muller(uint_to_uniform(w.w[2]), uint_to_uniform(w.w[3]), &out[2], &out[3]);
}

// normal(seed, k) for one logical index (slow path for ragged edges; kernels use randn4).
FA_HOST_DEVICE inline float normal_at(int64_t seed, int64_t k) {
  float n[4];
  randn4(seed, k >> 2, n);
  return n[k & 3];
}

}  // namespace fastalign
