// csrc/cpu/simd_pair.h — a two-register SIMD vector for stream_simd_impl.h.
//
// Included inside an ISA namespace (inside its `#pragma GCC target` region) after that namespace
// defines the native GCC vector types nu (uint32), ni (int32), nf (float) of one register. vu, vi, vf
// hold two registers and every operation is applied to both halves one after the other, so the code
// of stream_simd_impl.h, written once, interleaves two independent dependency chains (a single
// chain is latency-bound: ten dependent Philox rounds, then the log and sincos polynomials).
// No include guard on purpose: it is included once per ISA namespace.

struct vu { nu p[2]; };
struct vi { ni p[2]; };
struct vf { nf p[2]; };

#define FA_PAIR_BINOP(T, S, OP)                                                                    \
  static inline T operator OP(T x, T y) { return T{{x.p[0] OP y.p[0], x.p[1] OP y.p[1]}}; }     \
  static inline T operator OP(T x, S s) { return T{{x.p[0] OP s, x.p[1] OP s}}; }               \
  static inline T operator OP(S s, T x) { return T{{s OP x.p[0], s OP x.p[1]}}; }
#define FA_PAIR_CMP(T, S, OP)                                                                      \
  static inline vi operator OP(T x, T y) { return vi{{(ni)(x.p[0] OP y.p[0]), (ni)(x.p[1] OP y.p[1])}}; } \
  static inline vi operator OP(T x, S s) { return vi{{(ni)(x.p[0] OP s), (ni)(x.p[1] OP s)}}; }

FA_PAIR_BINOP(vf, float, +)
FA_PAIR_BINOP(vf, float, -)
FA_PAIR_BINOP(vf, float, *)
FA_PAIR_CMP(vf, float, <)
FA_PAIR_BINOP(vi, int32_t, +)
FA_PAIR_BINOP(vi, int32_t, -)
FA_PAIR_BINOP(vi, int32_t, &)
FA_PAIR_BINOP(vi, int32_t, |)
FA_PAIR_BINOP(vi, int32_t, ^)
FA_PAIR_BINOP(vu, uint32_t, +)
FA_PAIR_BINOP(vu, uint32_t, -)
FA_PAIR_BINOP(vu, uint32_t, ^)
FA_PAIR_CMP(vu, uint32_t, <)
#undef FA_PAIR_BINOP
#undef FA_PAIR_CMP

static inline vi operator>>(vi x, int s) { return vi{{x.p[0] >> s, x.p[1] >> s}}; }
static inline vi operator<<(vi x, int s) { return vi{{x.p[0] << s, x.p[1] << s}}; }
static inline vi operator-(vi x) { return vi{{-x.p[0], -x.p[1]}}; }
static inline vi operator~(vi x) { return vi{{~x.p[0], ~x.p[1]}}; }

static inline vi as_i(vf x) { return vi{{(ni)x.p[0], (ni)x.p[1]}}; }
static inline vi as_i(vu x) { return vi{{(ni)x.p[0], (ni)x.p[1]}}; }
static inline vf as_f(vi x) { return vf{{(nf)x.p[0], (nf)x.p[1]}}; }
static inline vf as_f(vu x) { return vf{{(nf)x.p[0], (nf)x.p[1]}}; }
static inline vu as_u(vi x) { return vu{{(nu)x.p[0], (nu)x.p[1]}}; }
static inline vf to_float(vi x) {
  return vf{{__builtin_convertvector(x.p[0], nf), __builtin_convertvector(x.p[1], nf)}};
}
// mask ? a : b, mask lanes all-ones or zero.
static inline vf select(vi mask, vf a, vf b) { return as_f((mask & as_i(a)) | (~mask & as_i(b))); }
static inline vf splat(float x) { return vf{{nf{} + x, nf{} + x}}; }
static inline vu splat_u(uint32_t x) { return vu{{nu{} + x, nu{} + x}}; }
// lane index 0 .. kLanes-1
static inline vu lane_index() {
  vu v;
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < kLanes / 2; ++i) v.p[h][i] = static_cast<uint32_t>(h * (kLanes / 2) + i);
  return v;
}
