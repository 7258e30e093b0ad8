// task_arithmetic (Ilharco et al. 2023): θ0 + λ Σ_k w_k τ_k, one fused pass over the raw inputs.
#include "method.h"

#include "../ops.h"

namespace tangent {
namespace merge {

// θ0 + λ Σ w_k (θ_k − θ0) = (1 − λ Σ w_k) θ0 + Σ λ w_k θ_k: no τ materialized. With normalize, Σ w_k
// divides the weights first (mergekit's normalize; a sum below 1e-8 in magnitude divides by 1).
std::vector<double> task_arithmetic_coefficients(const MergeSpec& spec, size_t models) {
  double wsum = 0;
  for (size_t k = 0; k < models; ++k) wsum += spec.weights.empty() ? 1.0 : spec.weights[k];
  const double div = spec.normalize && std::abs(wsum) >= 1e-8 ? wsum : 1.0;
  std::vector<double> c{1.0 - spec.lambda * wsum / div};
  for (size_t k = 0; k < models; ++k) c.push_back(spec.lambda * (spec.weights.empty() ? 1.0 : spec.weights[k]) / div);
  return c;
}

namespace {

// The combine over the raw inputs, the conversion to the compute dtype fused into the pass.
at::Tensor run_task_arithmetic(const Context& c) {
  std::vector<at::Tensor> all{c.base};
  all.insert(all.end(), c.models.begin(), c.models.end());
  return combine(at::Tensor(), all, task_arithmetic_coefficients(c.spec, c.count()), c.spec.compute, c.spec.out);
}

}  // namespace

Method task_arithmetic_method() { return {{"task_arithmetic", BaseUse::Required, 1, 0}, run_task_arithmetic, /*raw_inputs=*/true}; }

}  // namespace merge
}  // namespace tangent
