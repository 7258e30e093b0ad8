// karcher: the Riemannian (Karcher) mean of the models' directions on the unit sphere, found by
// fixed-point iteration, scaled by their mean norm. Every input is a point; weights are equal.
#include "method.h"

#include <cmath>

namespace tangent {
namespace merge {
namespace {

// All in float64 on the flattened tensors. u_i = x_i/‖x_i‖ for the inputs of norm > tol;
// u = normalized mean of them (the first one if that mean is below tol); then up to max_iter
// times: T = Σ_i (1/|V|) θ_i/sin θ_i (u_i − cos θ_i u) over the terms with θ_i ≥ tol (log map),
// stop if ‖T‖ < tol, else u = cos‖T‖ u + sin‖T‖ T/‖T‖ (exp map), renormalized. The result is
// u · mean_i ‖x_i‖ over all inputs. A term whose sin θ is 0 (an input antipodal to u) has no
// direction and is left out.
at::Tensor run_karcher(const Context& c) {
  const size_t n = c.count();
  if (n == 1) return c.models[0];
  const double tol = c.spec.tol;
  std::vector<at::Tensor> unit;
  double norm_mean = 0;
  for (const auto& m : c.models) {
    const at::Tensor x = m.reshape({-1}).to(at::kDouble);
    const double nx = x.norm().item<double>();
    norm_mean += nx / static_cast<double>(n);
    if (nx > tol) unit.push_back(x / nx);
  }
  if (unit.empty()) return at::zeros_like(c.models[0]);
  const double a = 1.0 / static_cast<double>(unit.size());
  at::Tensor u = at::zeros_like(unit[0]);
  for (const auto& ui : unit) u.add_(ui, a);
  const double nu = u.norm().item<double>();
  u = nu < tol ? unit[0].clone() : u / nu;
  for (int64_t it = 0; it < c.spec.max_iter; ++it) {
    at::Tensor step = at::zeros_like(u);
    for (const auto& ui : unit) {
      const double cs = std::max(-1.0, std::min(1.0, at::dot(u, ui).item<double>()));
      const double th = std::acos(cs), s = std::sin(th);
      if (th < tol || s <= 0.0) continue;
      step.add_(ui - u * cs, a * th / s);
    }
    const double ns = step.norm().item<double>();
    if (ns < tol) break;
    u = u * std::cos(ns) + step * (std::sin(ns) / ns);
    const double nn = u.norm().item<double>();
    if (nn > tol) u = u / nn;
  }
  return (u * norm_mean).reshape(c.models[0].sizes()).to(c.models[0].scalar_type());
}

}  // namespace

Method karcher_method() { return {{"karcher", BaseUse::None, 1, 0}, run_karcher}; }

}  // namespace merge
}  // namespace tangent
