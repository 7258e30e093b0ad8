// slerp: spherical interpolation between the base and one model (Shoemake 1985, as mergekit).
#include "method.h"

namespace tangent {
namespace merge {
namespace {

// θ0 → θ1 by t on the angle between the whole tensors' directions, the coefficients applied to
// the tensors as they are (not normalized): c = [sin((1 − t)Ω)/sin Ω, sin(tΩ)/sin Ω], Ω from the
// float64 Gram; linear where |cos| > 0.9995 or a tensor has norm ≤ 1e-8.
std::vector<double> slerp_coefficients(const Args& a, const Gram& g) {
  const double t = a.spec.t;
  const double n0 = std::sqrt(g.raw(0, 0)), n1 = std::sqrt(g.raw(1, 1));
  const double cos = n0 > kSlerpEps && n1 > kSlerpEps ? g.raw(0, 1) / (n0 * n1) : 1.0;
  if (std::abs(cos) > kSlerpParallel) return {1.0 - t, t};
  const double theta = std::acos(cos), s = std::sin(theta);
  return {std::sin((1.0 - t) * theta) / s, std::sin(t * theta) / s};
}

}  // namespace

Method slerp_method() { return {{"slerp", BaseUse::Required, 1, 1}, run_combination, false, slerp_coefficients}; }

}  // namespace merge
}  // namespace tangent
