// Fused optimizer steps for fine-tuning.
#pragma once

#include "common.h"

namespace tangent {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // decoupled (AdamW): θ ← θ (1 − lr·wd) before the Adam update
  double max_grad_norm = 0.0;  // > 0: clip the global gradient norm first (as clip_grad_norm_)
  int64_t step = 1;            // 1-based step number after this update (bias correction)
};

struct AdamWResult {
  double grad_norm = 0;  // global L2 norm of the gradients, before clipping
  double clip_coef = 1;  // factor the gradients were multiplied by (1: not clipped)
};

// One AdamW step over every parameter, in place: params, exp_avg, exp_avg_sq are updated;
// grads are read only. All four lists align; each tensor group shares shape, dtype (float32 or
// float64) and device. Element-wise fused on the CPU (one pass per tensor), ATen ops elsewhere.
// Matches torch.optim.AdamW (amsgrad=False, maximize=False) preceded by
// torch.nn.utils.clip_grad_norm_(max_norm) when max_grad_norm > 0.
AdamWResult adamw_step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& exp_avg,
                       const std::vector<at::Tensor>& exp_avg_sq, const std::vector<at::Tensor>& grads,
                       const AdamWOptions& opt);

// Global L2 norm of a list of tensors, accumulated in float64.
double global_norm(const std::vector<at::Tensor>& tensors);

}  // namespace tangent
