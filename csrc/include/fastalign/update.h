// fastalign/update.h — per-element SEA update rules (sgld, adam), shared by the CPU and CUDA backends.
#pragma once
#include <math.h>
#include "fastalign/common.h"

namespace fastalign {

// Step constants of Adam at step index `step` (bias correction uses t = step + 1), computed once per
// launch on the host or once per thread from a device-side step counter.
// Every constant is computed in double from the caller's double hyper-parameters and rounded once to
// float, as torch.optim.Adam does: 1 - beta2 for beta2 = 0.9999 taken from a float beta2 would be off
// by 8e-5 relative, which the float64 reference sees.
struct AdamCoefs {
  float lr, beta1, beta2, eps;
  float one_minus_beta1;  // 1 - beta1
  float one_minus_beta2;  // 1 - beta2
  float bias1;            // 1 - beta1^t
  float bias2;            // 1 - beta2^t
};

FA_HOST_DEVICE inline AdamCoefs make_adam_coefs(double lr, double beta1, double beta2, double eps, int64_t step) {
  const double t = static_cast<double>(step) + 1.0;
  AdamCoefs c;
  c.lr = static_cast<float>(lr);
  c.beta1 = static_cast<float>(beta1);
  c.beta2 = static_cast<float>(beta2);
  c.eps = static_cast<float>(eps);
  c.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  c.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  c.bias1 = static_cast<float>(1.0 - pow(beta1, t));
  c.bias2 = static_cast<float>(1.0 - pow(beta2, t));
  return c;
}

// sgld: y - lr * g + noise_std * xi   (g already multiplied by the clip coefficient)
FA_HOST_DEVICE inline float sgld_update(float y, float g, float lr, float noise_std, float xi) {
  return y - lr * g + noise_std * xi;
}

// adam: m, v updated in place; y - lr * mhat / (sqrt(vhat) + eps) + noise_std * xi
FA_HOST_DEVICE inline float adam_update(float y, float g, float* m, float* v, const AdamCoefs& c,
                                        float noise_std, float xi) {
  const float m_new = c.beta1 * (*m) + c.one_minus_beta1 * g;
  const float v_new = c.beta2 * (*v) + c.one_minus_beta2 * g * g;
  *m = m_new;
  *v = v_new;
  const float mhat = m_new / c.bias1;
  const float vhat = v_new / c.bias2;
  return y - c.lr * mhat / (sqrtf(vhat) + c.eps) + noise_std * xi;
}

}  // namespace fastalign
