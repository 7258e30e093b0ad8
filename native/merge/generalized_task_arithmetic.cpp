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

#include <algorithm>
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

// The same, streamed (stream.h): per model the exact bounds of its magnitude window — ranks
// [lo, hi) — by radix selection (ties, breadcrumbs), then chunk by chunk the sparsified τ̂_k (the
// window; DARE's counter-based draws; DELLA's per-row ranks, over chunks of whole rows), and entry
// by entry the election and the mean, in the compute dtype with the arithmetic of the whole-tensor
// version above (the same masks, the same results).
template <typename Acc>
bool gta_stream_t(const Args& a, Sparsify how, bool elect, const ChunkSource& src, const ChunkSink& sink) {
  const size_t K = a.count();
  const int64_t n = src.numel();
  const at::ScalarType compute = a.spec.compute;
  std::vector<RankBound> hi(K), lo(K);
  if (how == Sparsify::Magnitude || how == Sparsify::Breadcrumbs) {
    std::vector<RankRequest> reqs;
    for (size_t k = 0; k < K; ++k) {
      const int64_t start = how == Sparsify::Breadcrumbs ? keep_count(a.gamma(k), n) : 0;
      const int64_t count = std::min(keep_count(a.density(k), n), n - start);
      reqs.push_back({k, start + count});
      reqs.push_back({k, start});
    }
    const std::vector<RankBound> rb = abs_rank_bounds(src, compute, reqs);
    for (size_t k = 0; k < K; ++k) hi[k] = rb[2 * k], lo[k] = rb[2 * k + 1];
  }
  // DELLA ranks within rows: chunks of whole rows (a tensor of one or no dimension is one row).
  const int64_t rows = a.shape.size() < 2 ? 1 : a.shape[0];
  const int64_t row = rows == 0 ? 0 : n / rows;
  const int64_t chunk = how == Sparsify::Della && row > 0 ? row * std::max<int64_t>(1, kChunk / row) : kChunk;
  std::vector<uint64_t> seeds;
  std::vector<Acc> w, c;
  double wsum = 0;
  for (size_t k = 0; k < K; ++k) {
    seeds.push_back(mask_seed(a.spec.seed, a.name, k));
    w.push_back(static_cast<Acc>(a.weight(k)));
    c.push_back(a.spec.weighted_election ? static_cast<Acc>(a.weight(k)) : Acc(1));
    wsum += a.weight(k);
  }
  const bool divide = a.spec.normalize && std::abs(wsum) >= 1e-8;
  const Acc lambda = static_cast<Acc>(a.spec.lambda), div = static_cast<Acc>(wsum);
  const bool normalize = a.spec.normalize, rescale = a.spec.rescale;
  return stream_out<Acc>(src, compute, sink, [&](int64_t ch, int64_t start, int64_t len, const Acc* const* xs, Acc* out_res) {
    thread_local std::vector<Acc> th;
    thread_local std::vector<int64_t> order;
    if (th.size() < K * static_cast<size_t>(len)) th.resize(K * static_cast<size_t>(len));
    const Acc* x0 = xs[0];
    // τ̂_k for this chunk.
    for (size_t k = 0; k < K; ++k) {
      const Acc* xk = xs[k + 1];
      Acc* t = th.data() + k * static_cast<size_t>(len);
      const double d = a.density(k);
      if (how == Sparsify::Magnitude || how == Sparsify::Breadcrumbs) {
        int64_t tie_hi = hi[k].before.empty() ? 0 : hi[k].before[static_cast<size_t>(ch)];
        int64_t tie_lo = lo[k].before.empty() ? 0 : lo[k].before[static_cast<size_t>(ch)];
        // As the whole-tensor form: τ times its 0/1 mask (no data-dependent branch but at a tie).
        for (int64_t j = 0; j < len; ++j) {
          const uint64_t key = static_cast<uint64_t>(abs_key<Acc>(xk[j], x0[j]));
          const bool keep = within(hi[k], key, tie_hi) & !within(lo[k], key, tie_lo);
          t[j] = (xk[j] - x0[j]) * static_cast<Acc>(keep);
        }
      } else if (d >= 1.0) {
        for (int64_t j = 0; j < len; ++j) t[j] = xk[j] - x0[j];
      } else if (d <= 0.0) {
        std::fill(t, t + len, Acc(0));
      } else if (how == Sparsify::Random) {
        const Acc dd = static_cast<Acc>(d);
        for (int64_t j = 0; j < len; ++j)
          t[j] = (xk[j] - x0[j]) * static_cast<Acc>(uniform_at(seeds[k], static_cast<uint64_t>(start + j)) < d) / dd;
      } else {  // DELLA: p from the entry's ascending |τ| rank within its row
        const double eps = a.epsilon(k);
        const Acc slope = static_cast<Acc>(row > 1 ? 2.0 * eps / static_cast<double>(row - 1) : 0.0);
        const Acc floor = static_cast<Acc>(d - eps), dd = static_cast<Acc>(d);
        for (int64_t j = 0; j < len; ++j) t[j] = xk[j] - x0[j];
        if (static_cast<int64_t>(order.size()) < row) order.resize(static_cast<size_t>(row));
        for (int64_t r0 = 0; r0 < len; r0 += row) {
          Acc* tr = t + r0;
          for (int64_t q = 0; q < row; ++q) order[static_cast<size_t>(q)] = q;
          std::stable_sort(order.begin(), order.begin() + row, [&](int64_t x, int64_t y) { return std::abs(tr[x]) < std::abs(tr[y]); });
          for (int64_t r = 0; r < row; ++r) {
            const int64_t q = order[static_cast<size_t>(r)];
            const Acc p = row == 1 ? dd : static_cast<Acc>(r) * slope + floor;
            const Acc kept = tr[q] * static_cast<Acc>(uniform_at(seeds[k], static_cast<uint64_t>(start + r0 + q)) < static_cast<double>(p));
            tr[q] = rescale ? kept / p : kept;
          }
        }
      }
    }
    // The election and mean, with the loop's invariants in registers (not reloaded through the
    // captures at every entry).
    const bool el = elect, nrm = normalize, dv = divide;
    const Acc lam = lambda, dvs = div;
    const Acc* wk = w.data();
    const Acc* ck = c.data();
    const size_t L = static_cast<size_t>(len);
    const Acc* tk = th.data();
    for (int64_t j = 0; j < len; ++j) {
      const Acc b = x0[j];
      Acc merged = 0;
      if (el) {
        Acc mass = 0;
        for (size_t k = 0; k < K; ++k) mass += ck[k] * tk[k * L + static_cast<size_t>(j)];
        const int sign = (mass > 0) - (mass < 0);
        Acc num = 0, den = 0;
        for (size_t k = 0; k < K; ++k) {
          const Acc v = tk[k * L + static_cast<size_t>(j)];
          const int sk = (v > 0) - (v < 0);
          const Acc agree = static_cast<Acc>((sk != 0) & (sk == sign));
          num += wk[k] * (v * agree);
          den += wk[k] * agree;
        }
        const Acc q = num / (den != 0 ? den : Acc(1));
        merged = !nrm ? num : den != 0 ? q : Acc(0);
      } else {
        for (size_t k = 0; k < K; ++k) merged += wk[k] * tk[k * L + static_cast<size_t>(j)];
        if (dv) merged /= dvs;
      }
      out_res[j] = b + merged * lam;
    }
    if (len > 4 * kChunk) std::vector<Acc>().swap(th), std::vector<int64_t>().swap(order);  // a long DELLA row's
  }, chunk);
}

bool gta_stream(const Args& a, Sparsify how, bool elect, const ChunkSource& src, const ChunkSink& sink) {
  check(a.count() <= 64, ErrorKind::Argument, "merge: at most 64 models per streamed tensor, got ", a.count());
  return a.spec.compute == at::kDouble ? gta_stream_t<double>(a, how, elect, src, sink) : gta_stream_t<float>(a, how, elect, src, sink);
}
bool stream_ties(const Args& a, const ChunkSource& s, const ChunkSink& o) { return gta_stream(a, Sparsify::Magnitude, true, s, o); }
bool stream_dare_linear(const Args& a, const ChunkSource& s, const ChunkSink& o) { return gta_stream(a, Sparsify::Random, false, s, o); }
bool stream_dare_ties(const Args& a, const ChunkSource& s, const ChunkSink& o) { return gta_stream(a, Sparsify::Random, true, s, o); }
bool stream_breadcrumbs(const Args& a, const ChunkSource& s, const ChunkSink& o) { return gta_stream(a, Sparsify::Breadcrumbs, false, s, o); }
bool stream_breadcrumbs_ties(const Args& a, const ChunkSource& s, const ChunkSink& o) { return gta_stream(a, Sparsify::Breadcrumbs, true, s, o); }
bool stream_della(const Args& a, const ChunkSource& s, const ChunkSink& o) { return gta_stream(a, Sparsify::Della, true, s, o); }
bool stream_della_linear(const Args& a, const ChunkSource& s, const ChunkSink& o) { return gta_stream(a, Sparsify::Della, false, s, o); }

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
      {{"dare_linear", BaseUse::Required, 1, 0}, run_dare_linear, false, nullptr, true, stream_dare_linear},
      {{"dare_ties", BaseUse::Required, 1, 0}, run_dare_ties, false, nullptr, true, stream_dare_ties},
      {{"breadcrumbs", BaseUse::Required, 1, 0}, run_breadcrumbs, false, nullptr, true, stream_breadcrumbs},
      {{"breadcrumbs_ties", BaseUse::Required, 1, 0}, run_breadcrumbs_ties, false, nullptr, true, stream_breadcrumbs_ties},
      {{"della", BaseUse::Required, 1, 0}, run_della, false, nullptr, true, stream_della},
      {{"della_linear", BaseUse::Required, 1, 0}, run_della_linear, false, nullptr, true, stream_della_linear},
  };
}

}  // namespace merge
}  // namespace tangent
