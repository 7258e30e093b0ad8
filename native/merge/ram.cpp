// ram and ramplus_tl (Reinforced Agent Merging, mergekit): entries changed by one model take its
// change, entries changed by several take the mean of their changes; ramplus_tl amplifies a model's
// unique entries by how much it shares with the others (tensor-local).
#include "method.h"

namespace tangent {
namespace merge {
namespace {

// A_k = |τ_k| > epsilon; c = Σ_k A_k; U = (c = 1), S = (c > 1);
// ram:        θ0 + Σ_k A_k τ_k (U + S / max(c, 1))
// ramplus_tl: θ0 + Σ_k A_k τ_k (λ_k U + S / max(c, 1)), λ_k = 1 + r clamp(ρ_k, 0, alpha),
//             ρ_k = Σ A_k S / max(Σ A_k U, epsilon).
at::Tensor ram(const Context& c, bool plus) {
  const std::vector<at::Tensor> taus = c.task_vectors();
  const double eps = c.spec.ram_epsilon;
  std::vector<at::Tensor> active;
  at::Tensor count = at::zeros_like(taus[0]);
  for (const auto& tau : taus) {
    active.push_back((tau.abs() > eps).to(tau.scalar_type()));
    count.add_(active.back());
  }
  const at::Tensor unique = (count == 1).to(count.scalar_type());
  const at::Tensor shared = (count > 1).to(count.scalar_type());
  const at::Tensor share = shared / count.clamp_min(1.0);
  at::Tensor delta = at::zeros_like(taus[0]);
  for (size_t k = 0; k < taus.size(); ++k) {
    double lam = 1.0;
    if (plus) {
      const double sh = (active[k] * shared).sum().item<double>(), un = (active[k] * unique).sum().item<double>();
      const double rho = sh / std::max(un, eps);
      lam = 1.0 + c.spec.ram_r * std::max(0.0, std::min(rho, c.spec.ram_alpha));
    }
    delta.add_(active[k] * taus[k] * (unique * lam + share));
  }
  return c.base + delta;
}

at::Tensor run_ram(const Context& c) { return ram(c, false); }
at::Tensor run_ramplus_tl(const Context& c) { return ram(c, true); }

}  // namespace

Method ram_method() { return {{"ram", BaseUse::Required, 1, 0}, run_ram}; }
Method ramplus_tl_method() { return {{"ramplus_tl", BaseUse::Required, 1, 0}, run_ramplus_tl}; }

}  // namespace merge
}  // namespace tangent
