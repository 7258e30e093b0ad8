// multislerp: the weighted spherical mean of several models' directions (of their task vectors when
// a base is given), one projection at the normalized mean, scaled by the weighted mean norm.
#include "method.h"

namespace tangent {
namespace merge {
namespace {

// X_i = x_i (− θ0); w normalized to sum 1 with normalize_weights; û_i = X_i/(‖X_i‖ + eps);
// m = Σ w_i û_i; out = m/‖m‖ · Σ w_i ‖X_i‖ (+ θ0): a combination of the inputs, its coefficients
// from the Gram. This is mergekit's tangent-space step at m/‖m‖ in closed form: the step
// Σ w_i (û_i − ⟨û_i, m̂⟩m̂) is exactly m − ‖m‖m̂ = 0 (docs/merging.md). Where ‖m‖ < eps
// (directions that cancel) two models are interpolated linearly, Σ w_i X_i; more are an error
// naming the tensor. One model gives itself.
std::vector<double> multislerp_coefficients(const Args& a, const Gram& g) {
  const size_t n = a.count();
  std::vector<double> b(n, 0.0);
  if (n == 1) {
    b[0] = 1.0;
    if (a.has_base) b.insert(b.begin(), 0.0);
    return b;
  }
  double wsum = 0;
  for (size_t k = 0; k < n; ++k) wsum += a.weight(k);
  const double div = a.spec.normalize_weights ? wsum : 1.0;
  double nbar = 0;
  for (size_t k = 0; k < n; ++k) {
    const double nx = std::sqrt(std::max(0.0, g.model(k, k))), w = a.weight(k) / div;
    nbar += w * nx;
    b[k] = w / (nx + a.spec.eps);
  }
  double mm = 0;
  for (size_t k = 0; k < n; ++k)
    for (size_t l = 0; l < n; ++l) mm += b[k] * b[l] * g.model(k, l);
  const double nm = std::sqrt(std::max(0.0, mm));
  if (nm < a.spec.eps) {
    check(n == 2, ErrorKind::Argument, "merge: multislerp: tensor '", a.name,
          "': the weighted directions of the models cancel (their mean has norm ", nm, ")");
    for (size_t k = 0; k < n; ++k) b[k] = a.weight(k) / div;
  } else {
    for (auto& x : b) x *= nbar / nm;
  }
  if (a.has_base) {
    double s = 0;
    for (double x : b) s += x;
    b.insert(b.begin(), 1.0 - s);
  }
  return b;
}

}  // namespace

Method multislerp_method() {
  return {{"multislerp", BaseUse::Optional, 1, 0}, run_combination, false, multislerp_coefficients};
}

}  // namespace merge
}  // namespace tangent
