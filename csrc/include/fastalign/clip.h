// fastalign/clip.h — gradient-clipping coefficient, as torch.nn.utils.clip_grad_norm_ computes it.
#pragma once
#include "fastalign/common.h"

namespace fastalign {

constexpr float kClipEps = 1.0e-6f;

// Clip group of sea_step: the codes of CLIP_GROUPS in fastalign/_clip.py (a test keeps them equal),
// taken by the CPU and CUDA bindings and the Triton kernel alike.
enum class ClipGroup : int { kNone = 0, kChain = 1, kRow = 2, kGlobal = 3 };

// coef = min(1, max_norm / (norm + 1e-6)). Written so that a NaN norm gives a NaN coefficient and an
// infinite norm gives 0, exactly like torch.clamp(max_norm / (norm + 1e-6), max=1.0).
FA_HOST_DEVICE inline float clip_coef(float norm, float max_norm) {
  const float coef = max_norm / (norm + kClipEps);
  return coef > 1.0f ? 1.0f : coef;
}

}  // namespace fastalign
