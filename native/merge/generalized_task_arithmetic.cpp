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
#include "stream.h"

#include <ATen/Parallel.h>

#include <atomic>

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

// The same for the rank-trimmed methods, streamed (stream.h): per model the exact bounds of its
// magnitude window — ranks [lo, hi) — by radix selection, then entry by entry the trim, the
// election and the mean, in the compute dtype with the arithmetic of the whole-tensor version.
template <typename Acc>
bool gta_stream_t(const Args& a, Sparsify how, bool elect, const ChunkSource& src, const ChunkSink& sink) {
  const size_t K = a.count();
  const int64_t n = src.numel();
  const at::ScalarType compute = a.spec.compute;
  std::vector<RankBound> hi(K), lo(K);
  for (size_t k = 0; k < K; ++k) {
    const int64_t start = how == Sparsify::Breadcrumbs ? keep_count(a.gamma(k), n) : 0;
    const int64_t count = std::min(keep_count(a.density(k), n), n - start);
    hi[k] = rank_bound(src, k + 1, start + count, compute);
    lo[k] = rank_bound(src, k + 1, start, compute);
  }
  std::vector<Acc> w, c;
  double wsum = 0;
  for (size_t k = 0; k < K; ++k) {
    w.push_back(static_cast<Acc>(a.weight(k)));
    c.push_back(a.spec.weighted_election ? static_cast<Acc>(a.weight(k)) : Acc(1));
    wsum += a.weight(k);
  }
  const bool divide = a.spec.normalize && std::abs(wsum) >= 1e-8;
  const Acc lambda = static_cast<Acc>(a.spec.lambda), div = static_cast<Acc>(wsum);
  const bool normalize = a.spec.normalize;
  std::atomic<bool> bad{false};
  const at::ScalarType out = sink.dtype();
  src.chunks(compute, [&](int64_t ch, int64_t start, int64_t len, const void* const* xs) {
    thread_local std::vector<Acc> res;
    thread_local std::vector<double> obuf;
    if (res.size() < static_cast<size_t>(kChunk)) res.resize(static_cast<size_t>(kChunk));
    if (obuf.size() < static_cast<size_t>(kChunk)) obuf.resize(static_cast<size_t>(kChunk));
    int64_t tie_hi[64], tie_lo[64];
    Acc th[64];
    for (size_t k = 0; k < K; ++k) {
      tie_hi[k] = hi[k].before.empty() ? 0 : hi[k].before[static_cast<size_t>(ch)];
      tie_lo[k] = lo[k].before.empty() ? 0 : lo[k].before[static_cast<size_t>(ch)];
    }
    const Acc* x0 = static_cast<const Acc*>(xs[0]);
    for (int64_t j = 0; j < len; ++j) {
      const Acc b = x0[j];
      for (size_t k = 0; k < K; ++k) {
        const Acc xk = static_cast<const Acc*>(xs[k + 1])[j];
        const uint64_t key = static_cast<uint64_t>(abs_key<Acc>(xk, b));
        const bool keep = within(hi[k], key, tie_hi[k]) && !within(lo[k], key, tie_lo[k]);
        th[k] = keep ? xk - b : Acc(0);
      }
      Acc merged = 0;
      if (elect) {
        Acc mass = 0;
        for (size_t k = 0; k < K; ++k) mass += c[k] * th[k];
        const int sign = (mass > 0) - (mass < 0);
        Acc num = 0, den = 0;
        for (size_t k = 0; k < K; ++k) {
          const int sk = (th[k] > 0) - (th[k] < 0);
          if (sk != 0 && sk == sign) {
            num += w[k] * th[k];
            den += w[k];
          }
        }
        merged = !normalize ? num : den != 0 ? num / den : Acc(0);
      } else {
        for (size_t k = 0; k < K; ++k) merged += w[k] * th[k];
        if (divide) merged /= div;
      }
      res[static_cast<size_t>(j)] = b + merged * lambda;
    }
    if (convert_out(compute, res.data(), out, obuf.data(), len)) bad = true;
    sink.write(start, len, obuf.data());
  });
  return bad;
}

bool gta_stream(const Args& a, Sparsify how, bool elect, const ChunkSource& src, const ChunkSink& sink) {
  check(a.count() <= 64, ErrorKind::Argument, "merge: at most 64 models per streamed tensor, got ", a.count());
  return a.spec.compute == at::kDouble ? gta_stream_t<double>(a, how, elect, src, sink) : gta_stream_t<float>(a, how, elect, src, sink);
}
bool stream_ties(const Args& a, const ChunkSource& s, const ChunkSink& o) { return gta_stream(a, Sparsify::Magnitude, true, s, o); }
bool stream_breadcrumbs(const Args& a, const ChunkSource& s, const ChunkSink& o) { return gta_stream(a, Sparsify::Breadcrumbs, false, s, o); }
bool stream_breadcrumbs_ties(const Args& a, const ChunkSource& s, const ChunkSink& o) { return gta_stream(a, Sparsify::Breadcrumbs, true, s, o); }

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
      {{"ties", BaseUse::Required, 1, 0}, run_ties, false, nullptr, true, stream_ties},
      {{"dare_linear", BaseUse::Required, 1, 0}, run_dare_linear},
      {{"dare_ties", BaseUse::Required, 1, 0}, run_dare_ties},
      {{"breadcrumbs", BaseUse::Required, 1, 0}, run_breadcrumbs, false, nullptr, true, stream_breadcrumbs},
      {{"breadcrumbs_ties", BaseUse::Required, 1, 0}, run_breadcrumbs_ties, false, nullptr, true, stream_breadcrumbs_ties},
      {{"della", BaseUse::Required, 1, 0}, run_della},
      {{"della_linear", BaseUse::Required, 1, 0}, run_della_linear},
  };
}

}  // namespace merge
}  // namespace tangent
