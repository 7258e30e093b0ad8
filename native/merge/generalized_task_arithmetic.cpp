// The task-vector family (mergekit's generalized task arithmetic): each τ_k sparsified, weighted,
// optionally sign-elected, summed (or averaged: normalize), scaled by λ and added to θ0.
//   ties              magnitude trim + election (Yadav et al. 2023)
//   dare_linear       random drop, rescaled by 1/density (Yu et al. 2024)
//   dare_ties         random drop + election
//   breadcrumbs       drop the largest and the smallest (Davari & Belilovsky 2023)
//   breadcrumbs_ties  breadcrumbs + election
//   della             magnitude-ranked drop probabilities, rescaled by 1/p + election (Deep et al. 2024)
//   della_linear      the same without election
// (task_arithmetic itself, with no sparsification, is the fused task_arithmetic.cpp.)
#include "method.h"

namespace tangent {
namespace merge {
namespace {

enum class Sparsify { Magnitude, Random, Breadcrumbs, Della };

// DELLA's MagPrune: within each row (a tensor of one or no dimension is one row; otherwise the
// rows of its [size(0), rest] view) entries are ranked by |τ| ascending, r = 0 … n − 1, and kept
// with probability p = (d − ε) + 2ε·r/(n − 1) (d − ε for the smallest, d + ε for the largest; the
// mean is d); kept entries are divided by their p (rescale), dropped ones are 0.
at::Tensor della_prune(const at::Tensor& tau, double d, double eps, bool rescale, uint64_t seed) {
  if (d >= 1.0) return tau;
  if (d <= 0.0) return at::zeros_like(tau);
  const int64_t rows = tau.dim() < 2 ? 1 : tau.size(0);
  const int64_t n = rows == 0 ? 0 : tau.numel() / rows;
  if (n == 0) return tau;
  const at::Tensor view = tau.reshape({rows, n});
  at::Tensor p;
  if (n == 1) {
    p = at::full({rows, 1}, d, tau.options());
  } else {
    const at::Tensor order = std::get<1>(at::sort(view.abs(), /*stable=*/true, /*dim=*/1, /*descending=*/false));
    at::Tensor ranks = at::empty({rows, n}, tau.options());
    ranks.scatter_(1, order, at::arange(n, tau.options()).expand({rows, n}).contiguous());
    p = ranks * (2.0 * eps / static_cast<double>(n - 1)) + (d - eps);
  }
  const at::Tensor keep = bernoulli_mask(view, p, seed);
  const at::Tensor kept = view * keep;
  return (rescale ? kept / p : kept).reshape(tau.sizes());
}

at::Tensor sparsify(const Context& c, Sparsify how, const at::Tensor& tau, size_t k) {
  const int64_t n = tau.numel();
  const double d = c.density(k);
  switch (how) {
    case Sparsify::Magnitude:
      return tau * rank_mask(tau, 0, keep_count(d, n));
    case Sparsify::Random:
      if (d >= 1.0) return tau;
      if (d <= 0.0) return at::zeros_like(tau);
      return tau * bernoulli_mask(tau, d, mask_seed(c.spec.seed, c.name, k)) / d;
    case Sparsify::Breadcrumbs:
      return tau * rank_mask(tau, keep_count(c.gamma(k), n), keep_count(d, n));
    case Sparsify::Della:
      return della_prune(tau, d, c.epsilon(k), c.spec.rescale, mask_seed(c.spec.seed, c.name, k));
  }
  return tau;
}

// normalize without election divides by Σ w_k (1 where |Σ w_k| < 1e-8, as mergekit).
at::Tensor gta(const Context& c, Sparsify how, bool elect) {
  std::vector<at::Tensor> taus = c.task_vectors();
  std::vector<double> w;
  for (size_t k = 0; k < taus.size(); ++k) {
    taus[k] = sparsify(c, how, taus[k], k);
    w.push_back(c.weight(k));
  }
  at::Tensor merged;
  if (elect) {
    merged = elect_and_merge(taus, w, c.spec.weighted_election, c.spec.normalize);
  } else {
    merged = at::zeros_like(c.base);
    double wsum = 0;
    for (size_t k = 0; k < taus.size(); ++k) {
      merged.add_(taus[k], w[k]);
      wsum += w[k];
    }
    if (c.spec.normalize && std::abs(wsum) >= 1e-8) merged.div_(wsum);
  }
  return c.base + merged * c.spec.lambda;
}

at::Tensor run_ties(const Context& c) { return gta(c, Sparsify::Magnitude, true); }
at::Tensor run_dare_linear(const Context& c) { return gta(c, Sparsify::Random, false); }
at::Tensor run_dare_ties(const Context& c) { return gta(c, Sparsify::Random, true); }
at::Tensor run_breadcrumbs(const Context& c) { return gta(c, Sparsify::Breadcrumbs, false); }
at::Tensor run_breadcrumbs_ties(const Context& c) { return gta(c, Sparsify::Breadcrumbs, true); }
at::Tensor run_della(const Context& c) { return gta(c, Sparsify::Della, true); }
at::Tensor run_della_linear(const Context& c) { return gta(c, Sparsify::Della, false); }

}  // namespace

std::vector<Method> generalized_task_arithmetic_methods() {
  return {
      {{"ties", BaseUse::Required, 1, 0}, run_ties},
      {{"dare_linear", BaseUse::Required, 1, 0}, run_dare_linear},
      {{"dare_ties", BaseUse::Required, 1, 0}, run_dare_ties},
      {{"breadcrumbs", BaseUse::Required, 1, 0}, run_breadcrumbs},
      {{"breadcrumbs_ties", BaseUse::Required, 1, 0}, run_breadcrumbs_ties},
      {{"della", BaseUse::Required, 1, 0}, run_della},
      {{"della_linear", BaseUse::Required, 1, 0}, run_della_linear},
  };
}

}  // namespace merge
}  // namespace tangent
