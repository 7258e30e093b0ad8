// multislerp: the weighted spherical mean of several models' directions (of their task vectors when
// a base is given), one projection at the normalized mean, scaled by the weighted mean norm.
#include "method.h"

namespace tangent {
namespace merge {
namespace {

// X_i = x_i (− θ0), flattened to float64; w normalized to sum 1 with normalize_weights;
// û_i = X_i/(‖X_i‖ + eps); m = Σ w_i û_i; out = m/‖m‖ · Σ w_i ‖X_i‖ (+ θ0). This is mergekit's
// tangent-space step at m/‖m‖ in closed form: the step Σ w_i (û_i − ⟨û_i, m̂⟩m̂) is exactly
// m − ‖m‖m̂ = 0 (docs/merging.md). Where ‖m‖ < eps (directions that cancel) two models are
// interpolated linearly, Σ w_i X_i; more are an error naming the tensor.
at::Tensor run_multislerp(const Context& c) {
  const size_t n = c.count();
  const bool has_base = c.base.defined();
  if (n == 1) return c.models[0];
  double wsum = 0;
  for (size_t k = 0; k < n; ++k) wsum += c.weight(k);
  const double div = c.spec.normalize_weights ? wsum : 1.0;
  std::vector<at::Tensor> xs;
  at::Tensor m;
  double nbar = 0;
  for (size_t k = 0; k < n; ++k) {
    const at::Tensor x = (has_base ? c.models[k] - c.base : c.models[k]).reshape({-1}).to(at::kDouble);
    const double nx = x.norm().item<double>(), w = c.weight(k) / div;
    nbar += w * nx;
    m = k == 0 ? x * (w / (nx + c.spec.eps)) : m + x * (w / (nx + c.spec.eps));
    xs.push_back(x);
  }
  const double nm = m.norm().item<double>();
  at::Tensor out;
  if (nm < c.spec.eps) {
    check(n == 2, ErrorKind::Argument, "merge: multislerp: tensor '", c.name,
          "': the weighted directions of the models cancel (their mean has norm ", nm, ")");
    out = xs[0] * (c.weight(0) / div) + xs[1] * (c.weight(1) / div);
  } else {
    out = m * (nbar / nm);
  }
  out = out.reshape(c.models[0].sizes()).to(c.models[0].scalar_type());
  return has_base ? c.base + out : out;
}

}  // namespace

Method multislerp_method() { return {{"multislerp", BaseUse::Optional, 1, 0}, run_multislerp}; }

}  // namespace merge
}  // namespace tangent
