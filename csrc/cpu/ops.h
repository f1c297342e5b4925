// csrc/cpu/ops.h — the CPU backend's ops on torch tensors (the backend API of
// fastalign/backends/__init__.py). fastalign.ops validates and normalises every argument first:
// tensors are contiguous CPU tensors, seed int64 [B], iteration/step int64 [1], outputs preallocated.
#pragma once
#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

namespace fastalign {
namespace cpu {

// out [B, n, d] = h + u[:, step] + sigma * eps (step < tau), else h; udot [B, n] += u . eps if given.
void aisp_perturb(const at::Tensor& h, const at::Tensor& u, at::Tensor& out, double sigma,
                  const at::Tensor& seed, const at::Tensor& iteration, const at::Tensor& step,
                  const std::optional<at::Tensor>& udot, const std::optional<at::Tensor>& active);

// udot_out [B, n] = sum_{t < lengths[b,i]} sum_j u[b,t,j] * eps[b,i,t,j]
void aisp_udot(const at::Tensor& u, const at::Tensor& lengths, at::Tensor& udot_out, const at::Tensor& seed,
               const at::Tensor& iteration);

// out [B, tau, d] = u + sigma * sum_i weights[b,i] * eps[b,i,t,j] * [t < lengths[b,i]]
void aisp_apply(const at::Tensor& u, const at::Tensor& weights, const at::Tensor& lengths, at::Tensor& out,
                double sigma, const at::Tensor& seed, const at::Tensor& iteration);

// L2 norm of grad [B, L, V] per clip group (fastalign/clip.h's code): 1 chain ([B]), 2 row ([B, L]) or
// 3 global ([]), float32, fixed order.
at::Tensor sea_norm(const at::Tensor& grad, int64_t group);

// One SEA step (sgld or adam) with optional clipping by the norms of sea_norm.
void sea_update(const at::Tensor& y, const at::Tensor& grad, at::Tensor& out, const std::optional<at::Tensor>& norm,
                int64_t group, std::optional<double> max_norm, double lr, double noise_std,
                const at::Tensor& seed, const at::Tensor& step, const std::string& optimizer,
                const std::optional<at::Tensor>& m, const std::optional<at::Tensor>& v, double beta1, double beta2,
                double eps);

// out [B, N] = x + std * normal(seed[b], step * N + k)
void gaussian_perturb(const at::Tensor& x, at::Tensor& out, double std, const at::Tensor& seed,
                      const at::Tensor& step);

// ---- helpers shared by the op files (defined in bindings.cpp) ------------------------------------
// a * b + c as int64 with an error naming `what` instead of a silent wrap.
int64_t checked_offset(int64_t a, int64_t b, int64_t c, const char* what);
// The single int64 value of an int64 [1] (or []) tensor.
int64_t scalar_int64(const at::Tensor& t, const char* name);

}  // namespace cpu
}  // namespace fastalign
