// csrc/cuda/binding.cpp — thin torch binding of the CUDA launchers (csrc/cuda/launchers.h).
//
// Checks devices / dtypes / contiguity (fastalign.ops has already validated shapes and values),
// selects the device, takes torch's current stream, allocates reduction scratch from torch's caching
// allocator (so the calls can be captured in a CUDA graph) and dispatches on the storage dtype.
// The functions mirror the backend API of fastalign/backends/__init__.py.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/extension.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <optional>
#include <vector>

#include "launchers.h"

namespace fa = fastalign::cuda;

namespace {

fa::Dtype storage_dtype(const torch::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return fa::Dtype::kFloat32;
    case torch::kFloat16: return fa::Dtype::kFloat16;
    case torch::kBFloat16: return fa::Dtype::kBFloat16;
    default:
      TORCH_CHECK(false, "fastalign cuda: ", name, " must be float32, float16 or bfloat16, got ", t.scalar_type());
  }
}

void check(const torch::Tensor& t, const char* name, const torch::Device& device) {
  TORCH_CHECK(t.is_cuda(), "fastalign cuda: ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.device() == device, "fastalign cuda: ", name, " is on ", t.device(), ", expected ", device);
  TORCH_CHECK(t.is_contiguous(), "fastalign cuda: ", name, " must be contiguous");
}

void check_dtype(const torch::Tensor& t, const char* name, torch::ScalarType dtype) {
  TORCH_CHECK(t.scalar_type() == dtype, "fastalign cuda: ", name, " must be ", dtype, ", got ", t.scalar_type());
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "fastalign cuda: ", op, " launch failed: ", cudaGetErrorString(err));
}

// SM count of the current device (cached per device; sizes the reduction partials).
int num_sms() {
  static std::array<std::atomic<int>, 64> cache{};
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= static_cast<int>(cache.size())) device = 0;
  int sms = cache[device].load(std::memory_order_relaxed);
  if (sms == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    cache[device].store(sms, std::memory_order_relaxed);
  }
  return sms;
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

void check_counters(const torch::Tensor& seed, const torch::Tensor& counter, const char* counter_name,
                    const torch::Device& device) {
  check(seed, "seed", device);
  check(counter, counter_name, device);
  check_dtype(seed, "seed", torch::kInt64);
  check_dtype(counter, counter_name, torch::kInt64);
  TORCH_CHECK(counter.numel() >= 1, "fastalign cuda: ", counter_name, " must hold one value");
}

void aisp_perturb(const torch::Tensor& h, const torch::Tensor& u, const torch::Tensor& out, double sigma,
                  const torch::Tensor& seed, const torch::Tensor& iteration, const torch::Tensor& step,
                  const std::optional<torch::Tensor>& udot, const std::optional<torch::Tensor>& active) {
  const auto device = h.device();
  check(h, "h", device);
  check(u, "u", device);
  check(out, "out", device);
  check_dtype(u, "u", torch::kFloat32);
  check_dtype(out, "out", h.scalar_type());
  check_counters(seed, iteration, "iteration", device);
  check_counters(seed, step, "step", device);
  TORCH_CHECK(h.dim() == 3 && u.dim() == 3, "fastalign cuda: h and u must be 3-D");
  const int64_t B = h.size(0), n = h.size(1), d = h.size(2), tau = u.size(1);
  float* udot_ptr = nullptr;
  const bool* active_ptr = nullptr;
  if (udot.has_value()) {
    check(*udot, "udot", device);
    check_dtype(*udot, "udot", torch::kFloat32);
    TORCH_CHECK(udot->numel() == B * n, "fastalign cuda: udot must be [B, n]");
    udot_ptr = udot->data_ptr<float>();
    if (active.has_value()) {
      check(*active, "active", device);
      check_dtype(*active, "active", torch::kBool);
      TORCH_CHECK(active->numel() == B * n, "fastalign cuda: active must be [B, n]");
      active_ptr = active->data_ptr<bool>();
    }
  }
  const c10::cuda::CUDAGuard guard(device);
  check_launch(fa::aisp_perturb(storage_dtype(h, "h"), h.data_ptr(), u.data_ptr<float>(), out.data_ptr(),
                                static_cast<float>(sigma), seed.data_ptr<int64_t>(), iteration.data_ptr<int64_t>(),
                                step.data_ptr<int64_t>(), udot_ptr, active_ptr, B, n, tau, d,
                                current_stream()),
               "aisp_perturb");
}

void aisp_udot(const torch::Tensor& u, const torch::Tensor& lengths, const torch::Tensor& udot_out,
               const torch::Tensor& seed, const torch::Tensor& iteration) {
  const auto device = u.device();
  check(u, "u", device);
  check(lengths, "lengths", device);
  check(udot_out, "udot_out", device);
  check_dtype(u, "u", torch::kFloat32);
  check_dtype(lengths, "lengths", torch::kInt64);
  check_dtype(udot_out, "udot_out", torch::kFloat32);
  check_counters(seed, iteration, "iteration", device);
  const int64_t B = u.size(0), tau = u.size(1), d = u.size(2), n = lengths.size(1);
  TORCH_CHECK(udot_out.numel() == B * n, "fastalign cuda: udot_out must be [B, n]");
  const c10::cuda::CUDAGuard guard(device);
  const int sms = num_sms();
  const int partials = fa::reduction_partials(B * n, tau * d, sms);
  auto scratch = torch::empty({std::max<int64_t>(B * n * partials, 1)}, u.options().dtype(torch::kFloat32));
  check_launch(fa::aisp_udot(u.data_ptr<float>(), lengths.data_ptr<int64_t>(), udot_out.data_ptr<float>(),
                             seed.data_ptr<int64_t>(), iteration.data_ptr<int64_t>(), scratch.data_ptr<float>(), B, n,
                             tau, d, sms, current_stream()),
               "aisp_udot");
}

void aisp_apply(const torch::Tensor& u, const torch::Tensor& weights, const torch::Tensor& lengths,
                const torch::Tensor& out, double sigma, const torch::Tensor& seed, const torch::Tensor& iteration) {
  const auto device = u.device();
  check(u, "u", device);
  check(weights, "weights", device);
  check(lengths, "lengths", device);
  check(out, "out", device);
  check_dtype(u, "u", torch::kFloat32);
  check_dtype(weights, "weights", torch::kFloat32);
  check_dtype(lengths, "lengths", torch::kInt64);
  check_dtype(out, "out", torch::kFloat32);
  check_counters(seed, iteration, "iteration", device);
  const int64_t B = u.size(0), tau = u.size(1), d = u.size(2), n = weights.size(1);
  TORCH_CHECK(lengths.numel() == B * n, "fastalign cuda: lengths must be [B, n]");
  const c10::cuda::CUDAGuard guard(device);
  check_launch(fa::aisp_apply(u.data_ptr<float>(), weights.data_ptr<float>(), lengths.data_ptr<int64_t>(),
                              out.data_ptr<float>(), static_cast<float>(sigma), seed.data_ptr<int64_t>(),
                              iteration.data_ptr<int64_t>(), B, n, tau, d, current_stream()),
               "aisp_apply");
}

// group: 1 chain ([B]), 2 row ([B, L]), 3 global ([]).
torch::Tensor sea_norm(const torch::Tensor& grad, int64_t group) {
  const auto device = grad.device();
  check(grad, "grad", device);
  TORCH_CHECK(grad.dim() == 3, "fastalign cuda: grad must be [B, L, V]");
  const int64_t B = grad.size(0), L = grad.size(1), V = grad.size(2);
  int64_t rows, row_len;
  std::vector<int64_t> shape;
  switch (static_cast<fa::ClipGroup>(group)) {
    case fa::ClipGroup::kChain: rows = B; row_len = L * V; shape = {B}; break;
    case fa::ClipGroup::kRow: rows = B * L; row_len = V; shape = {B, L}; break;
    case fa::ClipGroup::kGlobal: rows = 1; row_len = B * L * V; shape = {}; break;
    default: TORCH_CHECK(false, "fastalign cuda: sea_norm group must be 1 (chain), 2 (row) or 3 (global)");
  }
  const c10::cuda::CUDAGuard guard(device);
  auto norm = torch::empty(shape, grad.options().dtype(torch::kFloat32));
  if (row_len == 0) return norm.zero_();
  const int sms = num_sms();
  const int partials = fa::reduction_partials(rows, row_len, sms);
  auto scratch = torch::empty({rows * partials}, grad.options().dtype(torch::kFloat32));
  check_launch(fa::sea_norm(storage_dtype(grad, "grad"), grad.data_ptr(), norm.data_ptr<float>(),
                            scratch.data_ptr<float>(), rows, row_len, sms, current_stream()),
               "sea_norm");
  return norm;
}

// group: 0 none, 1 chain, 2 row, 3 global; m and v given together for adam.
void sea_update(const torch::Tensor& y, const torch::Tensor& grad, const torch::Tensor& out,
                const std::optional<torch::Tensor>& norm, int64_t group, double max_norm, double lr,
                double noise_std, const torch::Tensor& seed, const torch::Tensor& step,
                const std::optional<torch::Tensor>& m, const std::optional<torch::Tensor>& v, double beta1,
                double beta2, double eps) {
  const auto device = y.device();
  check(y, "y", device);
  check(grad, "grad", device);
  check(out, "out", device);
  check_dtype(grad, "grad", y.scalar_type());
  check_dtype(out, "out", y.scalar_type());
  check_counters(seed, step, "step", device);
  TORCH_CHECK(y.dim() == 3, "fastalign cuda: y must be [B, L, V]");
  const int64_t B = y.size(0), L = y.size(1), V = y.size(2);
  const auto clip = static_cast<fa::ClipGroup>(group);
  TORCH_CHECK(group >= 0 && group <= 3, "fastalign cuda: sea_update group must be in 0..3");
  const float* norm_ptr = nullptr;
  if (clip != fa::ClipGroup::kNone) {
    TORCH_CHECK(norm.has_value(), "fastalign cuda: sea_update needs norm when clipping");
    check(*norm, "norm", device);
    check_dtype(*norm, "norm", torch::kFloat32);
    norm_ptr = norm->data_ptr<float>();
  }
  TORCH_CHECK(m.has_value() == v.has_value(), "fastalign cuda: adam needs both m and v");
  float* m_ptr = nullptr;
  float* v_ptr = nullptr;
  if (m.has_value()) {
    check(*m, "m", device);
    check(*v, "v", device);
    check_dtype(*m, "m", torch::kFloat32);
    check_dtype(*v, "v", torch::kFloat32);
    TORCH_CHECK(m->numel() == y.numel() && v->numel() == y.numel(), "fastalign cuda: m, v must be shaped like y");
    m_ptr = m->data_ptr<float>();
    v_ptr = v->data_ptr<float>();
  }
  const c10::cuda::CUDAGuard guard(device);
  check_launch(fa::sea_update(storage_dtype(y, "y"), y.data_ptr(), grad.data_ptr(), out.data_ptr(), norm_ptr, clip,
                              static_cast<float>(max_norm), static_cast<float>(lr), static_cast<float>(noise_std),
                              seed.data_ptr<int64_t>(), step.data_ptr<int64_t>(), m_ptr, v_ptr,
                              beta1, beta2, eps, B, L, V,
                              current_stream()),
               "sea_update");
}

void gaussian_perturb(const torch::Tensor& x, const torch::Tensor& out, double std_dev, const torch::Tensor& seed,
                      const torch::Tensor& step) {
  const auto device = x.device();
  check(x, "x", device);
  check(out, "out", device);
  check_dtype(out, "out", x.scalar_type());
  check_counters(seed, step, "step", device);
  const int64_t B = x.size(0);
  const int64_t N = B > 0 ? x.numel() / B : 0;
  const c10::cuda::CUDAGuard guard(device);
  check_launch(fa::gaussian_perturb(storage_dtype(x, "x"), x.data_ptr(), out.data_ptr(), static_cast<float>(std_dev),
                                    seed.data_ptr<int64_t>(), step.data_ptr<int64_t>(), B, N,
                                    current_stream()),
               "gaussian_perturb");
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastalign CUDA kernels (csrc/cuda); called by fastalign.backends.cuda";
  m.def("aisp_perturb", &aisp_perturb, "AISP perturbation (+ udot by-product)", py::arg("h"), py::arg("u"),
        py::arg("out"), py::arg("sigma"), py::arg("seed"), py::arg("iteration"), py::arg("step"), py::arg("udot"),
        py::arg("active"));
  m.def("aisp_udot", &aisp_udot, "AISP update pass 1: udot", py::arg("u"), py::arg("lengths"), py::arg("udot_out"),
        py::arg("seed"), py::arg("iteration"));
  m.def("aisp_apply", &aisp_apply, "AISP update pass 2: u_new", py::arg("u"), py::arg("weights"), py::arg("lengths"),
        py::arg("out"), py::arg("sigma"), py::arg("seed"), py::arg("iteration"));
  m.def("sea_norm", &sea_norm, "SEA gradient norm per clip group (deterministic)", py::arg("grad"), py::arg("group"));
  m.def("sea_update", &sea_update, "SEA sgld/adam update", py::arg("y"), py::arg("grad"), py::arg("out"),
        py::arg("norm"), py::arg("group"), py::arg("max_norm"), py::arg("lr"), py::arg("noise_std"), py::arg("seed"),
        py::arg("step"), py::arg("m"), py::arg("v"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"));
  m.def("gaussian_perturb", &gaussian_perturb, "x + std * xi with the SEA indexing", py::arg("x"), py::arg("out"),
        py::arg("std"), py::arg("seed"), py::arg("step"));
}
