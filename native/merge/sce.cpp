// sce (FuseChat, Wan et al. 2024): Select the entries whose task vectors vary most across the
// models, Calculate per-model weights from their energy, Erase the minority signs, then average.
#include "stream.h"

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
      // Population variance across the models, summed in model order (as the stream below).
      at::Tensor mean = taus[0].clone();
      for (size_t k = 1; k < n; ++k) mean.add_(taus[k]);
      mean.div_(static_cast<double>(n));
      at::Tensor var = at::zeros_like(mean);
      for (const auto& tau : taus) var.add_((tau - mean).square());
      var = var.div_(static_cast<double>(n)).reshape({-1});
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

// The same, streamed: a pass counting the entries of σ² ≠ 0, the rank bound of the top k by radix
// selection over σ²'s bits, a pass for the energies mean(τ̂_k²) (float64, per-chunk partials in chunk
// order), then the election and the weighted mean entry by entry.
template <typename Acc>
inline Acc variance_at(const Acc* const* x, size_t K, int64_t j) {
  Acc mean = x[1][j] - x[0][j];
  for (size_t k = 1; k < K; ++k) mean += x[k + 1][j] - x[0][j];
  mean /= static_cast<Acc>(K);
  Acc var = 0;
  for (size_t k = 0; k < K; ++k) {
    const Acc d = (x[k + 1][j] - x[0][j]) - mean;
    var += d * d;
  }
  return var / static_cast<Acc>(K);
}

template <typename Acc>
bool stream_sce_t(const Args& a, const ChunkSource& src, const ChunkSink& sink) {
  const size_t K = a.count();
  const int64_t n = src.numel();
  const at::ScalarType compute = a.spec.compute;
  const double topk = a.spec.select_topk;
  const bool select = topk < 1.0;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  RankBound keep;  // rank(σ²) < k
  keep.b = keep.n = n;
  if (select) {
    std::vector<int64_t> nzs(static_cast<size_t>(chunks), 0);
    src.chunks(compute, [&](int64_t ch, int64_t, int64_t len, const void* const* xs) {
      const auto* x = reinterpret_cast<const Acc* const*>(xs);
      int64_t c = 0;
      for (int64_t j = 0; j < len; ++j) c += variance_at(x, K, j) != 0;
      nzs[static_cast<size_t>(ch)] = c;
    });
    int64_t nz = 0;
    for (int64_t c : nzs) nz += c;
    const int64_t k = topk <= 0.0 ? 0 : static_cast<int64_t>(static_cast<double>(nz) * topk);
    keep = rank_bounds(src, compute, sizeof(Acc) * 8, [&](size_t, const void* const* xs, int64_t len, uint64_t* keys) {
      const auto* x = reinterpret_cast<const Acc* const*>(xs);
      for (int64_t j = 0; j < len; ++j) {
        const Acc v = variance_at(x, K, j);
        std::conditional_t<std::is_same_v<Acc, double>, uint64_t, uint32_t> u;
        std::memcpy(&u, &v, sizeof u);
        keys[j] = u;
      }
    }, {{0, k}})[0];
  }
  // τ̂_k for one chunk: τ_k, or 0 outside the selection; `tied` as within() counts.
  auto selected = [&](const Acc* const* x, int64_t ch, int64_t len, Acc* th) {
    int64_t tied = keep.before.empty() ? 0 : keep.before[static_cast<size_t>(ch)];
    for (int64_t j = 0; j < len; ++j) {
      bool in = true;
      if (select) {
        const Acc v = variance_at(x, K, j);
        std::conditional_t<std::is_same_v<Acc, double>, uint64_t, uint32_t> u;
        std::memcpy(&u, &v, sizeof u);
        in = within(keep, u, tied);
      }
      for (size_t k = 0; k < K; ++k) th[k * static_cast<size_t>(len) + static_cast<size_t>(j)] = in ? x[k + 1][j] - x[0][j] : Acc(0);
    }
  };
  // Energies.
  std::vector<double> part(static_cast<size_t>(chunks) * K, 0.0);
  src.chunks(compute, [&](int64_t ch, int64_t, int64_t len, const void* const* xs) {
    thread_local std::vector<Acc> th;
    if (th.size() < K * static_cast<size_t>(len)) th.resize(K * static_cast<size_t>(len));
    selected(reinterpret_cast<const Acc* const*>(xs), ch, len, th.data());
    for (size_t k = 0; k < K; ++k) {
      double e = 0;
      for (int64_t j = 0; j < len; ++j) {
        const double v = static_cast<double>(th[k * static_cast<size_t>(len) + static_cast<size_t>(j)]);
        e += v * v;
      }
      part[static_cast<size_t>(ch) * K + k] = e;
    }
  });
  std::vector<double> w(K, 0.0);
  double wsum = 0;
  for (size_t k = 0; k < K; ++k) {
    for (int64_t ch = 0; ch < chunks; ++ch) w[k] += part[static_cast<size_t>(ch) * K + k];
    w[k] = n == 0 ? 0.0 : w[k] / static_cast<double>(n);
    wsum += w[k];
  }
  std::vector<Acc> wa;
  for (size_t k = 0; k < K; ++k) wa.push_back(static_cast<Acc>(std::abs(wsum) < 1e-6 ? 1.0 / static_cast<double>(K) : w[k] / wsum));
  return stream_out<Acc>(src, compute, sink, [&](int64_t ch, int64_t, int64_t len, const Acc* const* x, Acc* res) {
    thread_local std::vector<Acc> th;
    if (th.size() < K * static_cast<size_t>(len)) th.resize(K * static_cast<size_t>(len));
    selected(x, ch, len, th.data());
    for (int64_t j = 0; j < len; ++j) {
      Acc mass = 0;
      for (size_t k = 0; k < K; ++k) mass += th[k * static_cast<size_t>(len) + static_cast<size_t>(j)];
      const int sign = mass >= 0 ? 1 : -1;
      Acc num = 0, den = 0;
      for (size_t k = 0; k < K; ++k) {
        const Acc v = th[k * static_cast<size_t>(len) + static_cast<size_t>(j)];
        const Acc agree = ((v > 0) - (v < 0)) == sign ? Acc(1) : Acc(0);
        num += wa[k] * (v * agree);
        den += wa[k] * agree;
      }
      res[j] = x[0][j] + num / std::max(den, static_cast<Acc>(1e-6));
    }
  });
}

bool stream_sce(const Args& a, const ChunkSource& s, const ChunkSink& o) {
  check(a.count() <= 63, ErrorKind::Argument, "merge: at most 63 models per streamed tensor, got ", a.count());
  return a.spec.compute == at::kDouble ? stream_sce_t<double>(a, s, o) : stream_sce_t<float>(a, s, o);
}

}  // namespace

Method sce_method() { return {{"sce", BaseUse::Required, 1, 0}, run_sce, false, nullptr, true, stream_sce}; }

}  // namespace merge
}  // namespace tangent
