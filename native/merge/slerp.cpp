// slerp: spherical interpolation between the base and one model (Shoemake 1985, as mergekit).
#include "method.h"

#include <cmath>

namespace tangent {
namespace merge {

// v0 → v1 by t on the angle between the whole tensors' directions, the coefficients applied to
// the tensors as they are (not normalized). Norms and the dot product from one float64 copy each.
at::Tensor slerp(const at::Tensor& v0, const at::Tensor& v1, double t) {
  const at::Tensor a = v0.reshape({-1}).to(at::kDouble), b = v1.reshape({-1}).to(at::kDouble);
  const double n0 = a.norm().item<double>(), n1 = b.norm().item<double>();
  const double cos = n0 > kSlerpEps && n1 > kSlerpEps ? at::dot(a, b).item<double>() / (n0 * n1) : 1.0;
  if (std::abs(cos) > kSlerpParallel) return v0 * (1.0 - t) + v1 * t;
  const double theta = std::acos(cos), s = std::sin(theta);
  return v0 * (std::sin((1.0 - t) * theta) / s) + v1 * (std::sin(t * theta) / s);
}

namespace {
at::Tensor run_slerp(const Context& c) { return slerp(c.base, c.models[0], c.spec.t); }
}  // namespace

Method slerp_method() { return {{"slerp", BaseUse::Required, 1, 1}, run_slerp}; }

}  // namespace merge
}  // namespace tangent
