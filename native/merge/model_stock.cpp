// model_stock (Jang et al. 2024): the average of the models pulled towards the base by the mean
// cosine of their task vectors.
#include "method.h"

#include <cmath>

namespace tangent {
namespace merge {
namespace {

// c = mean over pairs of cos(τ_k, τ_l); t = N c / (1 + (N − 1) c); θ0 + t (mean_k θ_k − θ0).
// Each τ is flattened to float64 once (not once per pair).
at::Tensor run_model_stock(const Context& c) {
  const size_t n = c.count();
  const std::vector<at::Tensor> taus = c.task_vectors();
  std::vector<at::Tensor> flat;
  std::vector<double> norms;
  for (const auto& tau : taus) {
    flat.push_back(tau.reshape({-1}).to(at::kDouble));
    norms.push_back(flat.back().norm().item<double>());
  }
  double cos_sum = 0;
  size_t pairs = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j, ++pairs)
      cos_sum += norms[i] > kSlerpEps && norms[j] > kSlerpEps ? at::dot(flat[i], flat[j]).item<double>() / (norms[i] * norms[j]) : 0.0;
  const double cm = cos_sum / static_cast<double>(pairs);
  const double den = 1.0 + static_cast<double>(n - 1) * cm;
  const double t = std::abs(den) > 1e-12 ? static_cast<double>(n) * cm / den : 0.0;
  at::Tensor mean = at::zeros_like(c.base);
  for (const auto& tau : taus) mean.add_(tau, 1.0 / static_cast<double>(n));
  return c.base + mean * t;
}

}  // namespace

Method model_stock_method() { return {{"model_stock", BaseUse::Required, 2, 0}, run_model_stock}; }

}  // namespace merge
}  // namespace tangent
