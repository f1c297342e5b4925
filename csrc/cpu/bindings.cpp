// csrc/cpu/bindings.cpp — the Python module of the CPU backend (fastalign._C_cpu ahead of time, or a
// just-in-time build by fastalign/backends/_jit.py): the backend-API ops plus stream/ISA hooks for tests.
#include <torch/extension.h>

#include <limits>

#include "ops.h"
#include "stream_simd.h"

namespace fastalign {
namespace cpu {

int64_t checked_offset(int64_t a, int64_t b, int64_t c, const char* what) {
  int64_t prod = 0, sum = 0;
  TORCH_CHECK(a >= 0 && b >= 0 && c >= 0 && !__builtin_mul_overflow(a, b, &prod) &&
                  !__builtin_add_overflow(prod, c, &sum),
              what, ": the stream offset overflows int64 (", a, " * ", b, " + ", c,
              "); use smaller iteration/step counters");
  return sum;
}

int64_t scalar_int64(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.numel() == 1, name, ": expected one int64 value, got a tensor of shape ", t.sizes());
  const int64_t value = t.to(at::kLong).item<int64_t>();
  TORCH_CHECK(value >= 0, name, ": expected >= 0, got ", value);
  return value;
}

namespace {

Isa isa_from_string(const std::string& name) {
  Isa isa;
  TORCH_CHECK(parse_isa(name.c_str(), &isa), "isa: expected 'portable', 'avx2', 'avx512' or 'auto', got '", name,
              "'");
  return isa;
}

// normal(seed, k) for k in [k0, k0 + count) on the given ISA path (tests, benchmarks).
at::Tensor stream_normals(int64_t seed, int64_t k0, int64_t count, const std::string& isa) {
  TORCH_CHECK(seed >= 0 && k0 >= 0 && count >= 0, "stream_normals: seed, k0, count must be >= 0");
  const Isa path = isa_from_string(isa);
  const int64_t head = k0 & 3;
  const int64_t nblocks = (head + count + 3) >> 2;
  at::Tensor buf = at::empty({4 * nblocks}, at::kFloat);
  {
    pybind11::gil_scoped_release no_gil;
    randn_blocks_isa(path, seed, k0 >> 2, nblocks, buf.data_ptr<float>());
  }
  return buf.narrow(0, head, count).clone();
}

// Philox word (as int64 in [0, 2^32)) of logical index k for k in [k0, k0 + count).
at::Tensor stream_words(int64_t seed, int64_t k0, int64_t count, const std::string& isa) {
  TORCH_CHECK(seed >= 0 && k0 >= 0 && count >= 0, "stream_words: seed, k0, count must be >= 0");
  const Isa path = isa_from_string(isa);
  const int64_t head = k0 & 3;
  const int64_t nblocks = (head + count + 3) >> 2;
  at::Tensor buf = at::empty({4 * nblocks}, at::kInt);
  words_blocks_isa(path, seed, k0 >> 2, nblocks, reinterpret_cast<uint32_t*>(buf.data_ptr<int32_t>()));
  return buf.narrow(0, head, count).to(at::kLong).bitwise_and(0xFFFFFFFFLL);
}

}  // namespace
}  // namespace cpu
}  // namespace fastalign

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace fc = fastalign::cpu;
  using pybind11::arg;
  m.doc() = "fastalign CPU backend: fused AISP / SEA ops (OpenMP across rows, SIMD inside)";
  pybind11::call_guard<pybind11::gil_scoped_release> nogil;
  m.def("aisp_perturb", &fc::aisp_perturb, arg("h"), arg("u"), arg("out"), arg("sigma"), arg("seed"),
        arg("iteration"), arg("step"), arg("udot"), arg("active"), nogil);
  m.def("aisp_udot", &fc::aisp_udot, arg("u"), arg("lengths"), arg("udot_out"), arg("seed"), arg("iteration"), nogil);
  m.def("aisp_apply", &fc::aisp_apply, arg("u"), arg("weights"), arg("lengths"), arg("out"), arg("sigma"),
        arg("seed"), arg("iteration"), nogil);
  m.def("sea_norm", &fc::sea_norm, arg("grad"), arg("group"), nogil);
  m.def("sea_update", &fc::sea_update, arg("y"), arg("grad"), arg("out"), arg("norm"), arg("group"),
        arg("max_norm"), arg("lr"), arg("noise_std"), arg("seed"), arg("step"), arg("optimizer"), arg("m"),
        arg("v"), arg("beta1"), arg("beta2"), arg("eps"), nogil);
  m.def("gaussian_perturb", &fc::gaussian_perturb, arg("x"), arg("out"), arg("std"), arg("seed"), arg("step"),
        nogil);
  m.def("stream_normals", &fc::stream_normals, arg("seed"), arg("k0"), arg("count"), arg("isa") = "auto");
  m.def("stream_words", &fc::stream_words, arg("seed"), arg("k0"), arg("count"), arg("isa") = "auto");
  m.def("best_isa", [] { return std::string(fc::isa_name(fc::best_isa())); });
  m.def("active_isa", [] { return std::string(fc::isa_name(fc::active_isa())); });
  m.def(
      "set_isa",
      [](const std::string& name) {
        fc::Isa isa;
        TORCH_CHECK(fc::parse_isa(name.c_str(), &isa),
                    "set_isa: expected 'portable', 'avx2', 'avx512' or 'auto', got '", name, "'");
        return std::string(fc::isa_name(fc::set_isa(isa)));
      },
      arg("isa"));
}
