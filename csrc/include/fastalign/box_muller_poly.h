// fastalign/box_muller_poly.h — Box-Muller's log and sincos as short polynomials, written once for a
// scalar float and for the SIMD vector types of csrc/cpu/stream_simd.cpp (every CPU path uses them).
//
// The inputs make general range reduction unnecessary: the radius takes u in [1e-7, 1] (the floored
// uniform: normal, positive, finite) and the angle 2*pi*u takes u in [0, 1). Same definition as
// fastalign::box_muller (philox.h, libm), evaluated differently: the float64 reference of the stream
// (fastalign.backends.rng) is r * cos(th) with r = sqrt(-2 ln u), th = float32(2*pi) * u, and these functions
// approximate exactly that (2*pi rounded to float32 included).
//
// Coefficients: minimax fits (Lawson's iteratively reweighted least squares, float64, 4001 Chebyshev
// nodes), rounded to float32 lowest order first with the rest refitted; csrc/tests/fit_box_muller.py
// prints them. Fit error: log1p 2.6e-8 relative, sin 4.7e-9 and cos 8.2e-10 absolute; float32
// evaluation adds the rest. Measured over all 75.5 million uniforms the stream can produce
// (csrc/tests/test_stream_simd.cpp --exhaustive, every path; bench/RESULTS.md): |r - r64| <= 4.7e-7,
// |cos - cos64|, |sin - sin64| <= 1.7e-7, so |normal - float64 reference| <= 1.55e-6 (with FMA
// contraction 1.34e-6), inside the 2e-6 the tests hold every path to.
//
// A vector type V brings its own as_i / as_u / as_f / to_float (found by argument-dependent lookup);
// the scalar ones are below. Integer lanes are int32 (arithmetic >>), the sign masks uint32.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fastalign/philox.h"

// Always inlined: a SIMD caller compiles them under its own `#pragma GCC target` (an out-of-line
// instantiation would be compiled for the baseline ISA, one function call per vector).
#define FA_POLY_INLINE inline __attribute__((always_inline))

namespace fastalign {
namespace poly {

inline int32_t as_i(float x) { int32_t i; memcpy(&i, &x, sizeof(i)); return i; }
inline uint32_t as_u(float x) { uint32_t i; memcpy(&i, &x, sizeof(i)); return i; }
inline float as_f(int32_t i) { float x; memcpy(&x, &i, sizeof(x)); return x; }
inline float as_f(uint32_t i) { float x; memcpy(&x, &i, sizeof(x)); return x; }
inline float to_float(int32_t i) { return static_cast<float>(i); }

// -2 ln(1 + t) = -2t + t^2 * P(t), t in [-1/3, 1/3]: P's coefficients, constant term first.
constexpr float kLogP[8] = {9.999987483e-01f, -6.666640043e-01f, 5.001549721e-01f, -4.002214670e-01f,
                            3.283405900e-01f, -2.799426913e-01f, 3.076719642e-01f, -2.804116607e-01f};
constexpr float kNeg2Ln2 = -1.386294365e+00f;  // exactly -2 * float32(ln 2)
// sin(2*pi_f * f) = f * S(f^2) and cos(2*pi_f * f) = 1 + f^2 * C(f^2), |f| <= 1/4 (pi_f: float32 pi).
constexpr float kSinS[5] = {6.283185482e+00f, -4.134168243e+01f, 8.160220337e+01f, -7.657279968e+01f,
                            3.968946838e+01f};
constexpr float kCosC[5] = {-1.973921013e+01f, 6.493941498e+01f, -8.545616150e+01f, 6.018791580e+01f,
                            -2.524353218e+01f};
// (float32(pi) - pi) / float32(2*pi): the angle float32(2*pi) * u, written 2*pi_f * f + q * pi_f, is
// q * pi + 2*pi_f * (f + q * kAngleSlip); the polynomials see the shifted f.
constexpr float kAngleSlip = 1.391376721e-08f;

// -2 ln(u) for u in [1e-7, 1]. u = m * 2^e with m in [2/3, 4/3) (the bit pattern of 2/3 splits the
// binades), t = m - 1 exact, -2 ln u = e * (-2 ln 2) - 2t + t^2 P(t).
template <class F>
FA_POLY_INLINE F neg2_log(const F& u) {
  const auto bits = as_i(u);
  const auto i = bits - 0x3f2aaaab;  // float32(2/3)
  const auto e = i >> 23;
  const F t = as_f(bits - (i & ~0x007fffff)) - 1.0f;
  const F z = t * t;
  F p = t * kLogP[7] + kLogP[6];
  p = p * t + kLogP[5];
  p = p * t + kLogP[4];
  p = p * t + kLogP[3];
  p = p * t + kLogP[2];
  p = p * t + kLogP[1];
  p = p * t + kLogP[0];
  const F y = z * p - (t + t);  // (t + t): no product, so the only fusion is z * p - 2t
  return to_float(e) * kNeg2Ln2 + y;
}

// (cos, sin) of float32(2*pi) * u for u in [0, 1): q = round(2u) in {0, 1, 2}, f = u - q/2 in
// [-1/4, 1/4] (exact), then (-1)^q times the polynomials at f (plus the slip above).
template <class F>
FA_POLY_INLINE void sincos_2pi(const F& u, F* cos_out, F* sin_out) {
  const float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer (ties to even)
  const F shifted = u * 2.0f + kRound;
  const F q = shifted - kRound;
  const auto sign = as_u(shifted) << 31;  // the parity of q, as a sign bit
  F f = u - q * 0.5f;
  f = q * kAngleSlip + f;
  const F z = f * f;
  F s = z * kSinS[4] + kSinS[3];
  s = s * z + kSinS[2];
  s = s * z + kSinS[1];
  s = s * z + kSinS[0];
  s = s * f;
  F c = z * kCosC[4] + kCosC[3];
  c = c * z + kCosC[2];
  c = c * z + kCosC[1];
  c = c * z + kCosC[0];
  c = c * z + 1.0f;
  *cos_out = as_f(as_u(c) ^ sign);
  *sin_out = as_f(as_u(s) ^ sign);
}

// The scalar Box-Muller with these polynomials (the same floor as fastalign::box_muller).
inline void box_muller(float ua, float ub, float* n0, float* n1) {
  const float r = sqrtf(neg2_log(fmaxf(kBoxMullerFloor, ua)));
  float c, s;
  sincos_2pi(ub, &c, &s);
  *n0 = r * c;
  *n1 = r * s;
}

}  // namespace poly
}  // namespace fastalign
