// csrc/cpu/aisp_perturb.cpp — AISP perturbation of one decode step, with the udot by-product.
//
//   out[b,i,:] = h[b,i,:] + u[b,step,:] + sigma * eps[b,i,:]         (step < tau; else out = h)
//   udot[b,i] += sum_j u[b,step,j] * eps[b,i,j]                     (if udot given and active[b,i])
//   eps[b,i,j] = normal(seed[b], ((it*n + i)*tau + step)*d + j)
//
// Parallel over the B*n rows; inside a row, chunks of kChunk normals. float32 storage: the SIMD stream
// computes out from its registers (perturb_range), writing the normals to an L1 buffer only when udot
// needs them; bfloat16/float16: the normals go to the buffer and a vectorised loop consumes them.
// udot is summed per row in double, chunk by chunk in order: one thread owns a row, so the result does not depend on the thread count.
#include <ATen/Parallel.h>

#include <type_traits>

#include "dtype.h"
#include "ops.h"
#include "stream_simd.h"

namespace fastalign {
namespace cpu {
namespace {

template <typename scalar_t>
void perturb_rows(const scalar_t* h, const float* u, scalar_t* out, float sigma, const int64_t* seed,
                  int64_t it, int64_t step, int64_t B, int64_t n, int64_t tau, int64_t d, float* udot,
                  const bool* active) {
  // Largest offset of the op: ((it*n + n-1)*tau + step)*d + d-1 < ((it+1)*n*tau)*d.
  checked_offset(checked_offset(checked_offset(it + 1, n, 0, "aisp_perturb offset"), tau, 0,
                                "aisp_perturb offset"),
                 d, 0, "aisp_perturb offset");
  at::parallel_for(0, B * n, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float scratch[randn_scratch_size(kChunk)];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / n, i = row % n;
      const float* u_row = u + (b * tau + step) * d;
      const scalar_t* h_row = h + row * d;
      scalar_t* out_row = out + row * d;
      const int64_t k0 = ((it * n + i) * tau + step) * d;
      const bool want_udot = udot != nullptr && (active == nullptr || active[row]);
      double acc = 0.0;
      for (int64_t j0 = 0; j0 < d; j0 += kChunk) {
        const int64_t len = std::min(kChunk, d - j0);
        const float* uc = u_row + j0;
        const scalar_t* hc = h_row + j0;
        scalar_t* oc = out_row + j0;
        const float* eps;
        if constexpr (std::is_same_v<scalar_t, float>) {
          // The normals go from registers into out (the same values as the loop below gives in this
          // build); the buffer gets them only for udot.
          perturb_range(seed[b], k0 + j0, len, hc, uc, sigma, kBuildFusesMulAdd, oc, want_udot ? scratch : nullptr);
          eps = scratch;
        } else {
          eps = randn_range(seed[b], k0 + j0, len, scratch);
#pragma omp simd
          for (int64_t j = 0; j < len; ++j) store(oc, j, load(hc, j) + uc[j] + sigma * eps[j]);
        }
        if (want_udot) {
          float part = 0.0f;  // fixed association: the vector width of this binary, then in order
#pragma omp simd reduction(+ : part)
          for (int64_t j = 0; j < len; ++j) part += uc[j] * eps[j];
          acc += part;
        }
      }
      if (want_udot) udot[row] += static_cast<float>(acc);
    }
  });
}

}  // namespace

void aisp_perturb(const at::Tensor& h, const at::Tensor& u, at::Tensor& out, double sigma,
                  const at::Tensor& seed, const at::Tensor& iteration, const at::Tensor& step,
                  const std::optional<at::Tensor>& udot, const std::optional<at::Tensor>& active) {
  const int64_t B = h.size(0), n = h.size(1), d = h.size(2), tau = u.size(1);
  const int64_t it = scalar_int64(iteration, "iteration");
  const int64_t st = scalar_int64(step, "step");
  if (st >= tau) {
    out.copy_(h);
    return;
  }
  TORCH_CHECK(u.scalar_type() == at::kFloat, "aisp_perturb: u must be float32, got ", u.scalar_type());
  float* udot_ptr = udot.has_value() ? udot->data_ptr<float>() : nullptr;
  const bool* active_ptr = active.has_value() ? active->data_ptr<bool>() : nullptr;
  FASTALIGN_DISPATCH_STORAGE(h.scalar_type(), "aisp_perturb", [&] {
    perturb_rows<scalar_t>(h.data_ptr<scalar_t>(), u.data_ptr<float>(), out.data_ptr<scalar_t>(),
                           static_cast<float>(sigma), seed.data_ptr<int64_t>(), it, st, B, n, tau, d, udot_ptr,
                           active_ptr);
  });
}

}  // namespace cpu
}  // namespace fastalign
