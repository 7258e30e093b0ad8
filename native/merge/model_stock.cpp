// model_stock (Jang et al. 2024): the average of the models pulled towards the base by the mean
// cosine of their task vectors.
#include "method.h"

namespace tangent {
namespace merge {
namespace {

// c = mean over pairs of cos(τ_k, τ_l) (0 for a pair with a task vector of norm ≤ 1e-8);
// t = N c / (1 + (N − 1) c) (0 where that is undefined); θ0 + t (mean_k θ_k − θ0).
std::vector<double> model_stock_coefficients(const Args& a, const Gram& g) {
  const size_t n = a.count();
  std::vector<double> norms;
  for (size_t k = 0; k < n; ++k) norms.push_back(std::sqrt(std::max(0.0, g.model(k, k))));
  double cos_sum = 0;
  size_t pairs = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j, ++pairs)
      cos_sum += norms[i] > kSlerpEps && norms[j] > kSlerpEps ? g.model(i, j) / (norms[i] * norms[j]) : 0.0;
  const double cm = cos_sum / static_cast<double>(pairs);
  const double den = 1.0 + static_cast<double>(n - 1) * cm;
  const double t = std::abs(den) > 1e-12 ? static_cast<double>(n) * cm / den : 0.0;
  std::vector<double> c{1.0 - t};
  for (size_t k = 0; k < n; ++k) c.push_back(t / static_cast<double>(n));
  return c;
}

}  // namespace

Method model_stock_method() {
  return {{"model_stock", BaseUse::Required, 2, 0}, run_combination, false, model_stock_coefficients};
}

}  // namespace merge
}  // namespace tangent
