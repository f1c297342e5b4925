// csrc/cpu/simd_regs.h — a SIMD vector of kRegs registers for stream_simd_impl.h.
//
// Included inside an ISA namespace (inside its `#pragma GCC target` region, if any) after that
// namespace defines kRegs, the native GCC vector types nu (uint32), ni (int32), nf (float) of one
// register and nmax(nf x, float s) = x < s ? s : x lane by lane. vu, vi, vf hold kRegs registers and every operation is applied to each in turn, so the
// code of stream_simd_impl.h, written once, interleaves kRegs independent dependency chains (a single
// chain is latency-bound: ten dependent Philox rounds, then the log and sincos polynomials).
// No include guard on purpose: it is included once per ISA namespace.

constexpr int kRegLanes = static_cast<int>(sizeof(nu) / sizeof(uint32_t));
constexpr int kLanes = kRegs * kRegLanes;

struct vu { nu p[kRegs]; };
struct vi { ni p[kRegs]; };
struct vf { nf p[kRegs]; };

#define FA_REGS_MAP(T, EXPR)                                \
  T r;                                                      \
  for (int k = 0; k < kRegs; ++k) r.p[k] = EXPR;            \
  return r;
#define FA_REGS_BINOP(T, S, OP)                                                                    \
  static inline T operator OP(T x, T y) { FA_REGS_MAP(T, x.p[k] OP y.p[k]) }                     \
  static inline T operator OP(T x, S s) { FA_REGS_MAP(T, x.p[k] OP s) }                          \
  static inline T operator OP(S s, T x) { FA_REGS_MAP(T, s OP x.p[k]) }

FA_REGS_BINOP(vf, float, +)
FA_REGS_BINOP(vf, float, -)
FA_REGS_BINOP(vf, float, *)
FA_REGS_BINOP(vi, int32_t, +)
FA_REGS_BINOP(vi, int32_t, -)
FA_REGS_BINOP(vi, int32_t, &)
FA_REGS_BINOP(vi, int32_t, ^)
FA_REGS_BINOP(vu, uint32_t, +)
FA_REGS_BINOP(vu, uint32_t, -)
FA_REGS_BINOP(vu, uint32_t, ^)

static inline vi operator>>(vi x, int s) { FA_REGS_MAP(vi, x.p[k] >> s) }
static inline vu operator<<(vu x, int s) { FA_REGS_MAP(vu, x.p[k] << s) }
// -1 in the lanes where x < s (unsigned), else 0.
static inline vi operator<(vu x, uint32_t s) { FA_REGS_MAP(vi, (ni)(x.p[k] < s)) }

static inline vi as_i(vf x) { FA_REGS_MAP(vi, (ni)x.p[k]) }
static inline vi as_i(vu x) { FA_REGS_MAP(vi, (ni)x.p[k]) }
static inline vf as_f(vi x) { FA_REGS_MAP(vf, (nf)x.p[k]) }
static inline vf as_f(vu x) { FA_REGS_MAP(vf, (nf)x.p[k]) }
static inline vu as_u(vi x) { FA_REGS_MAP(vu, (nu)x.p[k]) }
static inline vu as_u(vf x) { FA_REGS_MAP(vu, (nu)x.p[k]) }
static inline vf to_float(vi x) { FA_REGS_MAP(vf, __builtin_convertvector(x.p[k], nf)) }
// x < s ? s : x lane by lane (the namespace's nmax: maxps where the ISA has it).
static inline vf vmax(vf x, float s) { FA_REGS_MAP(vf, nmax(x.p[k], s)) }
static inline vf splat(float x) { FA_REGS_MAP(vf, nf{} + x) }
static inline vu splat_u(uint32_t x) { FA_REGS_MAP(vu, nu{} + x) }
// lane index 0 .. kLanes-1
static inline vu lane_index() {
  vu v;
  for (int k = 0; k < kRegs; ++k)
    for (int i = 0; i < kRegLanes; ++i) v.p[k][i] = static_cast<uint32_t>(k * kRegLanes + i);
  return v;
}
#undef FA_REGS_BINOP
#undef FA_REGS_MAP
