// task_arithmetic (Ilharco et al. 2023): θ0 + λ Σ_k w_k τ_k, one fused pass over the raw inputs.
#include "method.h"

#include "../ops.h"

namespace tangent {
namespace merge {
namespace {

// θ0 + λ Σ w_k (θ_k − θ0) = (1 − λ Σ w_k) θ0 + Σ λ w_k θ_k: no τ materialized, the conversion to
// the compute dtype fused into the pass (the inputs come in their own dtype). With normalize, Σ w_k
// divides the weights first (mergekit's normalize; a sum below 1e-8 in magnitude divides by 1).
at::Tensor run_task_arithmetic(const Context& c) {
  double wsum = 0;
  for (size_t k = 0; k < c.count(); ++k) wsum += c.weight(k);
  const double div = c.spec.normalize && std::abs(wsum) >= 1e-8 ? wsum : 1.0;
  std::vector<double> coef{1.0 - c.spec.lambda * wsum / div};
  for (size_t k = 0; k < c.count(); ++k) coef.push_back(c.spec.lambda * c.weight(k) / div);
  std::vector<at::Tensor> all{c.base};
  all.insert(all.end(), c.models.begin(), c.models.end());
  return combine(at::Tensor(), all, coef, c.spec.compute, c.spec.out);
}

}  // namespace

Method task_arithmetic_method() { return {{"task_arithmetic", BaseUse::Required, 1, 0}, run_task_arithmetic, /*raw_inputs=*/true}; }

}  // namespace merge
}  // namespace tangent
