// sce (FuseChat, Wan et al. 2024): Select the entries whose task vectors vary most across the
// models, Calculate per-model weights from their energy, Erase the minority signs, then average.
#include "method.h"

namespace tangent {
namespace merge {
namespace {

// With select_topk < 1: σ² = the population variance across models per entry; of the entries with
// σ² ≠ 0, the k = ⌊nnz(σ²)·select_topk⌋ largest (ties: lower flat index) are kept in every τ_k.
// Election on the raw τ: γ = +1 where Σ_k τ_k ≥ 0, else −1; agree = τ_k ≠ 0 and sign τ_k = γ.
// w_k = mean(τ_k²) / Σ_l mean(τ_l²) (1/N when that sum is below 1e-6); θ0 + Σ_k w_k agree τ_k /
// max(Σ_k w_k agree, 1e-6). Weights given by the user are refused (lib/merge): sce computes its own.
at::Tensor run_sce(const Context& c) {
  const size_t n = c.count();
  std::vector<at::Tensor> taus = c.task_vectors();
  const double topk = c.spec.select_topk;
  if (topk < 1.0) {
    at::Tensor keep;
    if (topk <= 0.0) {
      keep = at::zeros_like(taus[0], at::kBool);
    } else {
      const at::Tensor var = at::stack(taus).var(0, /*unbiased=*/false).reshape({-1});
      const int64_t nz = var.ne(0).sum().item<int64_t>();
      const int64_t k = static_cast<int64_t>(static_cast<double>(nz) * topk);
      at::Tensor flat = at::zeros({var.numel()}, var.options().dtype(at::kBool));
      if (k > 0) {
        const at::Tensor order = std::get<1>(at::sort(var, /*stable=*/true, /*dim=*/0, /*descending=*/true));
        flat.index_put_({order.slice(0, 0, k)}, true);
      }
      keep = flat.view(taus[0].sizes());
    }
    for (auto& tau : taus) tau = tau * keep.to(tau.scalar_type());
  }
  at::Tensor mass = at::zeros_like(taus[0]);
  for (const auto& tau : taus) mass.add_(tau);
  const at::Tensor sign = at::where(mass >= 0, at::ones_like(mass), -at::ones_like(mass));
  std::vector<double> w;
  double wsum = 0;
  for (const auto& tau : taus) {
    w.push_back(tau.numel() == 0 ? 0.0 : tau.to(at::kDouble).square().mean().item<double>());
    wsum += w.back();
  }
  for (auto& wk : w) wk = std::abs(wsum) < 1e-6 ? 1.0 / static_cast<double>(n) : wk / wsum;
  at::Tensor num = at::zeros_like(taus[0]), den = at::zeros_like(taus[0]);
  for (size_t k = 0; k < n; ++k) {
    const at::Tensor agree = (taus[k].sign() == sign).to(taus[k].scalar_type());
    num.add_(taus[k] * agree, w[k]);
    den.add_(agree, w[k]);
  }
  return c.base + num / den.clamp_min(1e-6);
}

}  // namespace

Method sce_method() { return {{"sce", BaseUse::Required, 1, 0}, run_sce}; }

}  // namespace merge
}  // namespace tangent
