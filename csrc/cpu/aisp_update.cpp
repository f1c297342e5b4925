// csrc/cpu/aisp_update.cpp — the two noise-regenerating passes of the AISP update.
//
//   aisp_udot:  udot[b,i]  = sum_{t < len[b,i]} sum_j u[b,t,j] * eps[b,i,t,j]
//   aisp_apply: out[b,t,j] = u[b,t,j] + sigma * sum_i w[b,i] * eps[b,i,t,j] * [t < len[b,i]]
//   eps[b,i,t,j] = normal(seed[b], ((it*n + i)*tau + t)*d + j)
//
// (The softmax between them is computed by fastalign.ops.) No [B, n, tau, d] noise buffer exists:
// each pass regenerates the noise chunk by chunk. aisp_udot is parallel over the B*n rollouts (the
// noise of rollout i is one contiguous index range, dotted with u[b, :len] flattened); aisp_apply is
// parallel over the B*tau rows of u and sums the n rollouts in order i = 0..n-1. Every reduction is
// owned by one thread and done in a fixed order: results do not depend on the thread count.
#include <ATen/Parallel.h>

#include <vector>

#include "dtype.h"
#include "ops.h"
#include "stream_simd.h"

namespace fastalign {
namespace cpu {
namespace {

void check_lengths(const int64_t* lengths, int64_t count, int64_t tau, const char* op) {
  for (int64_t r = 0; r < count; ++r)
    TORCH_CHECK(lengths[r] >= 0 && lengths[r] <= tau, op, ": lengths must be in [0, tau=", tau, "], got ",
                lengths[r]);
}

}  // namespace

void aisp_udot(const at::Tensor& u, const at::Tensor& lengths, at::Tensor& udot_out, const at::Tensor& seed,
               const at::Tensor& iteration) {
  const int64_t B = u.size(0), tau = u.size(1), d = u.size(2), n = lengths.size(1);
  const int64_t it = scalar_int64(iteration, "iteration");
  checked_offset(checked_offset(it + 1, n, 0, "aisp_update offset"), tau * d, 0, "aisp_update offset");
  const float* u_ptr = u.data_ptr<float>();
  const int64_t* len_ptr = lengths.data_ptr<int64_t>();
  const int64_t* seed_ptr = seed.data_ptr<int64_t>();
  float* udot_ptr = udot_out.data_ptr<float>();
  check_lengths(len_ptr, B * n, tau, "aisp_update");
  at::parallel_for(0, B * n, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float scratch[randn_scratch_size(kChunk)];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / n, i = row % n;
      const int64_t count = len_ptr[row] * d;  // t < len, all j: one contiguous range
      const int64_t k0 = (it * n + i) * tau * d;
      const float* u_b = u_ptr + b * tau * d;
      double acc = 0.0;
      for (int64_t e0 = 0; e0 < count; e0 += kChunk) {
        const int64_t len = std::min(kChunk, count - e0);
        const float* eps = randn_range(seed_ptr[b], k0 + e0, len, scratch);
        const float* uc = u_b + e0;
        float part = 0.0f;
#pragma omp simd reduction(+ : part)
        for (int64_t e = 0; e < len; ++e) part += uc[e] * eps[e];
        acc += part;
      }
      udot_ptr[row] = static_cast<float>(acc);
    }
  });
}

void aisp_apply(const at::Tensor& u, const at::Tensor& weights, const at::Tensor& lengths, at::Tensor& out,
                double sigma, const at::Tensor& seed, const at::Tensor& iteration) {
  const int64_t B = u.size(0), tau = u.size(1), d = u.size(2), n = lengths.size(1);
  const int64_t it = scalar_int64(iteration, "iteration");
  checked_offset(checked_offset(it + 1, n, 0, "aisp_update offset"), tau * d, 0, "aisp_update offset");
  const float* u_ptr = u.data_ptr<float>();
  const float* w_ptr = weights.data_ptr<float>();
  const int64_t* len_ptr = lengths.data_ptr<int64_t>();
  const int64_t* seed_ptr = seed.data_ptr<int64_t>();
  float* out_ptr = out.data_ptr<float>();
  const float sig = static_cast<float>(sigma);
  check_lengths(len_ptr, B * n, tau, "aisp_update");
  at::parallel_for(0, B * tau, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float scratch[randn_scratch_size(kChunk)];
    std::vector<float> acc(static_cast<size_t>(std::min(d, kChunk)));
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / tau, t = row % tau;
      for (int64_t j0 = 0; j0 < d; j0 += kChunk) {
        const int64_t len = std::min(kChunk, d - j0);
        float* a = acc.data();
        std::fill(a, a + len, 0.0f);
        for (int64_t i = 0; i < n; ++i) {
          const float w = w_ptr[b * n + i];
          if (t >= len_ptr[b * n + i] || w == 0.0f) continue;  // adds exactly nothing
          const int64_t k0 = ((it * n + i) * tau + t) * d + j0;
          const float* eps = randn_range(seed_ptr[b], k0, len, scratch);
#pragma omp simd
          for (int64_t j = 0; j < len; ++j) a[j] += w * eps[j];
        }
        const float* uc = u_ptr + row * d + j0;
        float* oc = out_ptr + row * d + j0;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) oc[j] = uc[j] + sig * a[j];
      }
    }
  });
}

}  // namespace cpu
}  // namespace fastalign
