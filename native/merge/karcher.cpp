// karcher: the Riemannian (Karcher) mean of the models' directions on the unit sphere, found by
// fixed-point iteration, scaled by their mean norm. Every input is a point; weights are equal.
#include "method.h"

namespace tangent {
namespace merge {
namespace {

// u stays in the span of the inputs, so the iteration runs on its coefficients a (u = Σ a_i x_i)
// with inner products from the float64 Gram: u_i = x_i/‖x_i‖ for the inputs of norm > tol;
// u = normalized mean of them (the first one if that mean is below tol); then up to max_iter
// times: T = Σ_i (1/|V|) θ_i/sin θ_i (u_i − cos θ_i u) over the terms with θ_i ≥ tol (log map),
// stop if ‖T‖ < tol, else u = cos‖T‖ u + sin‖T‖ T/‖T‖ (exp map), renormalized. The result is
// u · mean_i ‖x_i‖ over all inputs. A term whose sin θ is 0 (an input antipodal to u) has no
// direction and is left out.
std::vector<double> karcher_coefficients(const Args& args, const Gram& g) {
  const size_t n = args.count();
  if (n == 1) return {1.0};
  const double tol = args.spec.tol;
  std::vector<double> norm(n);
  double norm_mean = 0;
  std::vector<size_t> unit;
  for (size_t i = 0; i < n; ++i) {
    norm[i] = std::sqrt(std::max(0.0, g.model(i, i)));
    norm_mean += norm[i] / static_cast<double>(n);
    if (norm[i] > tol) unit.push_back(i);
  }
  std::vector<double> a(n, 0.0);
  if (unit.empty()) return a;
  auto dot = [&](const std::vector<double>& p, const std::vector<double>& q) {
    double s = 0;
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < n; ++j) s += p[i] * q[j] * g.model(i, j);
    return s;
  };
  const double w = 1.0 / static_cast<double>(unit.size());
  for (size_t i : unit) a[i] = w / norm[i];
  const double nu = std::sqrt(std::max(0.0, dot(a, a)));
  if (nu < tol) {
    std::fill(a.begin(), a.end(), 0.0);
    a[unit[0]] = 1.0 / norm[unit[0]];
  } else {
    for (auto& x : a) x /= nu;
  }
  for (int64_t it = 0; it < args.spec.max_iter; ++it) {
    std::vector<double> step(n, 0.0);
    for (size_t i : unit) {
      double ui = 0;  // ⟨u, u_i⟩
      for (size_t j = 0; j < n; ++j) ui += a[j] * g.model(j, i);
      const double cs = std::max(-1.0, std::min(1.0, ui / norm[i]));
      const double th = std::acos(cs), s = std::sin(th);
      if (th < tol || s <= 0.0) continue;
      const double f = w * th / s;
      step[i] += f / norm[i];
      for (size_t j = 0; j < n; ++j) step[j] -= f * cs * a[j];
    }
    const double ns = std::sqrt(std::max(0.0, dot(step, step)));
    if (ns < tol) break;
    for (size_t j = 0; j < n; ++j) a[j] = a[j] * std::cos(ns) + step[j] * (std::sin(ns) / ns);
    const double nn = std::sqrt(std::max(0.0, dot(a, a)));
    if (nn > tol)
      for (auto& x : a) x /= nn;
  }
  for (auto& x : a) x *= norm_mean;
  return a;
}

}  // namespace

Method karcher_method() { return {{"karcher", BaseUse::None, 1, 0}, run_combination, false, karcher_coefficients}; }

}  // namespace merge
}  // namespace tangent
