// fastalign/update.h — per-element SEA update rules (sgld, adam), shared by the CPU and CUDA backends.
#pragma once
#include <math.h>
#include "fastalign/common.h"

namespace fastalign {

// Step constants of Adam at step index `step` (bias correction uses t = step + 1), computed once per
// launch on the host or once per thread from a device-side step counter.
struct AdamCoefs {
  float lr, beta1, beta2, eps;
  float bias1;  // 1 - beta1^t
  float bias2;  // 1 - beta2^t
};

FA_HOST_DEVICE inline AdamCoefs make_adam_coefs(float lr, float beta1, float beta2, float eps, int64_t step) {
  const double t = static_cast<double>(step) + 1.0;
  AdamCoefs c;
  c.lr = lr;
  c.beta1 = beta1;
  c.beta2 = beta2;
  c.eps = eps;
  c.bias1 = static_cast<float>(1.0 - pow(static_cast<double>(beta1), t));
  c.bias2 = static_cast<float>(1.0 - pow(static_cast<double>(beta2), t));
  return c;
}

// sgld: y - lr * g + noise_std * xi   (g already multiplied by the clip coefficient)
FA_HOST_DEVICE inline float sgld_update(float y, float g, float lr, float noise_std, float xi) {
  return y - lr * g + noise_std * xi;
}

// adam: m, v updated in place; y - lr * mhat / (sqrt(vhat) + eps) + noise_std * xi
FA_HOST_DEVICE inline float adam_update(float y, float g, float* m, float* v, const AdamCoefs& c,
                                        float noise_std, float xi) {
  const float m_new = c.beta1 * (*m) + (1.0f - c.beta1) * g;
  const float v_new = c.beta2 * (*v) + (1.0f - c.beta2) * g * g;
  *m = m_new;
  *v = v_new;
  const float mhat = m_new / c.bias1;
  const float vhat = v_new / c.bias2;
  return y - c.lr * mhat / (sqrtf(vhat) + c.eps) + noise_std * xi;
}

}  // namespace fastalign
