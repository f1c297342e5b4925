// csrc/cpu/sea_step.cpp — one SEA Langevin step on logits y [B, L, V]: the norm pass and the update pass.
//
//   sea_norm:   ||grad|| per chain b ([B]), per row (b, l) ([B, L]) or over everything ([])
//   sea_update: g = grad * clip_coef(norm, max_norm)  (or g = grad without clipping)
//               sgld: out = y - lr*g + noise_std*xi
//               adam: m, v updated in place; out = y - lr*mhat/(sqrt(vhat)+eps) + noise_std*xi
//               xi[b,l,v] = normal(seed[b], step*L*V + l*V + v)
//
// The norm is deterministic: each (b, l) row's sum of squares is reduced by one thread (in double,
// chunk by chunk in order) into a [B*L] buffer, then combined serially in index order. The update is
// elementwise, split into fixed chunks of each chain (never by thread count). With noise_std == 0 the
// noise is not generated.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <vector>

#include "dtype.h"
#include "fastalign/clip.h"
#include "fastalign/update.h"
#include "ops.h"
#include "stream_simd.h"

namespace fastalign {
namespace cpu {
namespace {

using Group = ClipGroup;  // fastalign/clip.h: the codes of CLIP_GROUPS in fastalign/_clip.py

Group parse_group(int64_t group) {
  TORCH_CHECK(group >= static_cast<int>(Group::kChain) && group <= static_cast<int>(Group::kGlobal),
              "sea_step: clip group must be 1 (chain), 2 (row) or 3 (global), got ", group);
  return static_cast<Group>(group);
}

template <typename scalar_t>
void row_sum_squares(const scalar_t* grad, int64_t rows, int64_t V, double* out) {
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* g = grad + r * V;
      double acc = 0.0;
      for (int64_t j0 = 0; j0 < V; j0 += kChunk) {
        const int64_t len = std::min(kChunk, V - j0);
        float part = 0.0f;
#pragma omp simd reduction(+ : part)
        for (int64_t j = 0; j < len; ++j) {
          const float x = load(g, j0 + j);
          part += x * x;
        }
        acc += part;
      }
      out[r] = acc;
    }
  });
}

// y, grad, out: one chain's [L*V] slice at element offset e0 (len elements, all in row l, so one
// clip coefficient). xi from `noise` (nullptr when noise_std == 0).
template <typename scalar_t, bool kAdam>
inline void update_span(const scalar_t* y, const scalar_t* grad, scalar_t* out, float* m, float* v, int64_t len,
                        float coef, bool clip, float lr, float noise_std, const AdamCoefs& adam,
                        const float* noise) {
#pragma omp simd
  for (int64_t e = 0; e < len; ++e) {
    const float g0 = load(grad, e);
    const float g = clip ? g0 * coef : g0;
    const float xi = noise != nullptr ? noise[e] : 0.0f;
    const float ns = noise != nullptr ? noise_std : 0.0f;
    float r;
    if (kAdam) {
      r = adam_update(load(y, e), g, m + e, v + e, adam, ns, xi);
    } else {
      r = sgld_update(load(y, e), g, lr, ns, xi);
    }
    store(out, e, r);
  }
}

template <typename scalar_t, bool kAdam>
void update_all(const scalar_t* y, const scalar_t* grad, scalar_t* out, float* m, float* v, int64_t B, int64_t L,
                int64_t V, const std::vector<float>& row_coef, bool clip, float lr, float noise_std,
                const AdamCoefs& adam, const int64_t* seed, int64_t step) {
  const int64_t N = L * V;
  const int64_t chunks_per_chain = (N + kStreamChunk - 1) / kStreamChunk;
  const bool noise = noise_std != 0.0f;
  if (noise) checked_offset(step + 1, N, 0, "sea_step offset (step * L * V)");
  at::parallel_for(0, B * chunks_per_chain, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float scratch[randn_scratch_size(kStreamChunk)];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks_per_chain;
      const int64_t e0 = (task % chunks_per_chain) * kStreamChunk;
      const int64_t len = std::min(kStreamChunk, N - e0);
      const float* xi = noise ? randn_range(seed[b], step * N + e0, len, scratch) : nullptr;
      const int64_t base = b * N + e0;
      // split at row boundaries: the clip coefficient is per row (constant per chain for chain/global)
      for (int64_t s = 0; s < len;) {
        const int64_t l = (e0 + s) / V;
        const int64_t span = std::min(len - s, (l + 1) * V - (e0 + s));
        const int64_t at = base + s;
        update_span<scalar_t, kAdam>(y + at, grad + at, out + at, kAdam ? m + at : nullptr, kAdam ? v + at : nullptr,
                                     span, row_coef[b * L + l], clip, lr, noise_std, adam,
                                     xi != nullptr ? xi + s : nullptr);
        s += span;
      }
    }
  });
}

}  // namespace

at::Tensor sea_norm(const at::Tensor& grad, int64_t group) {
  const Group g = parse_group(group);
  const int64_t B = grad.size(0), L = grad.size(1), V = grad.size(2);
  std::vector<double> sq(static_cast<size_t>(B * L));
  FASTALIGN_DISPATCH_STORAGE(grad.scalar_type(), "sea_norm",
                             [&] { row_sum_squares<scalar_t>(grad.data_ptr<scalar_t>(), B * L, V, sq.data()); });
  at::Tensor norm;
  const auto opts = grad.options().dtype(at::kFloat);
  if (g == Group::kRow) {
    norm = at::empty({B, L}, opts);
    float* p = norm.data_ptr<float>();
    for (int64_t r = 0; r < B * L; ++r) p[r] = static_cast<float>(std::sqrt(sq[r]));
  } else if (g == Group::kChain) {
    norm = at::empty({B}, opts);
    float* p = norm.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      double acc = 0.0;
      for (int64_t l = 0; l < L; ++l) acc += sq[b * L + l];
      p[b] = static_cast<float>(std::sqrt(acc));
    }
  } else {
    norm = at::empty({}, opts);
    double acc = 0.0;
    for (int64_t r = 0; r < B * L; ++r) acc += sq[r];
    *norm.data_ptr<float>() = static_cast<float>(std::sqrt(acc));
  }
  return norm;
}

void sea_update(const at::Tensor& y, const at::Tensor& grad, at::Tensor& out, const std::optional<at::Tensor>& norm,
                int64_t group, std::optional<double> max_norm, double lr, double noise_std,
                const at::Tensor& seed, const at::Tensor& step, const std::string& optimizer,
                const std::optional<at::Tensor>& m, const std::optional<at::Tensor>& v, double beta1, double beta2,
                double eps) {
  const int64_t B = y.size(0), L = y.size(1), V = y.size(2);
  const int64_t st = scalar_int64(step, "step");
  TORCH_CHECK(optimizer == "sgld" || optimizer == "adam", "sea_step: optimizer must be 'sgld' or 'adam', got '",
              optimizer, "'");
  const bool adam = optimizer == "adam";
  const bool clip = max_norm.has_value();
  std::vector<float> row_coef(static_cast<size_t>(B * L), 1.0f);
  if (clip) {
    TORCH_CHECK(norm.has_value(), "sea_step: max_norm given but no norm");
    const Group g = parse_group(group);
    const at::Tensor nf = norm->to(at::kFloat).contiguous();
    const float* np = nf.data_ptr<float>();
    const float mx = static_cast<float>(*max_norm);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t l = 0; l < L; ++l) {
        const float nrm = g == Group::kRow ? np[b * L + l] : (g == Group::kChain ? np[b] : np[0]);
        row_coef[b * L + l] = clip_coef(nrm, mx);
      }
  }
  float* m_ptr = nullptr;
  float* v_ptr = nullptr;
  if (adam) {
    TORCH_CHECK(m.has_value() && v.has_value(), "sea_step: optimizer='adam' needs state (m, v)");
    TORCH_CHECK(m->scalar_type() == at::kFloat && v->scalar_type() == at::kFloat,
                "sea_step: adam state must be float32");
    m_ptr = m->data_ptr<float>();
    v_ptr = v->data_ptr<float>();
  }
  const AdamCoefs coefs = make_adam_coefs(lr, beta1, beta2, eps, st);
  const int64_t* seed_ptr = seed.data_ptr<int64_t>();
  FASTALIGN_DISPATCH_STORAGE(y.scalar_type(), "sea_step", [&] {
    TORCH_CHECK(grad.scalar_type() == y.scalar_type(), "sea_step: grad dtype ", grad.scalar_type(),
                " differs from y dtype ", y.scalar_type());
    const scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    if (adam)
      update_all<scalar_t, true>(yp, gp, op, m_ptr, v_ptr, B, L, V, row_coef, clip, static_cast<float>(lr),
                                 static_cast<float>(noise_std), coefs, seed_ptr, st);
    else
      update_all<scalar_t, false>(yp, gp, op, nullptr, nullptr, B, L, V, row_coef, clip, static_cast<float>(lr),
                                  static_cast<float>(noise_std), coefs, seed_ptr, st);
  });
}

}  // namespace cpu
}  // namespace fastalign
