// ram and ramplus_tl (Reinforced Agent Merging, mergekit): entries changed by one model take its
// change, entries changed by several take the mean of their changes; ramplus_tl amplifies a model's
// unique entries by how much it shares with the others (tensor-local).
#include "stream.h"

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

// The same streamed: for ramplus_tl a pass counting each model's shared and unique entries (exact
// integer counts), then entry by entry.
template <typename Acc>
bool ram_stream_t(const Args& a, bool plus, const ChunkSource& src, const ChunkSink& sink) {
  const size_t K = a.count();
  const at::ScalarType compute = a.spec.compute;
  const Acc eps = static_cast<Acc>(a.spec.ram_epsilon);
  const int64_t chunks = (src.numel() + kChunk - 1) / kChunk;
  auto counts = [&](const Acc* const* x, int64_t j) {
    int c = 0;
    for (size_t k = 0; k < K; ++k) c += std::abs(x[k + 1][j] - x[0][j]) > eps;
    return c;
  };
  std::vector<Acc> lam(K, Acc(1));
  if (plus) {
    std::vector<int64_t> part(static_cast<size_t>(chunks) * K * 2, 0);  // per chunk and model: shared, unique
    src.chunks(compute, [&](int64_t ch, int64_t, int64_t len, const void* const* xs) {
      const auto* x = reinterpret_cast<const Acc* const*>(xs);
      int64_t* p = part.data() + static_cast<size_t>(ch) * K * 2;
      for (int64_t j = 0; j < len; ++j) {
        const int c = counts(x, j);
        if (c == 0) continue;
        for (size_t k = 0; k < K; ++k)
          if (std::abs(x[k + 1][j] - x[0][j]) > eps) ++p[2 * k + (c == 1 ? 1 : 0)];
      }
    });
    for (size_t k = 0; k < K; ++k) {
      int64_t sh = 0, un = 0;
      for (int64_t ch = 0; ch < chunks; ++ch) sh += part[(static_cast<size_t>(ch) * K + k) * 2], un += part[(static_cast<size_t>(ch) * K + k) * 2 + 1];
      const double rho = static_cast<double>(sh) / std::max(static_cast<double>(un), a.spec.ram_epsilon);
      lam[k] = static_cast<Acc>(1.0 + a.spec.ram_r * std::max(0.0, std::min(rho, a.spec.ram_alpha)));
    }
  }
  return stream_out<Acc>(src, compute, sink, [&](int64_t, int64_t, int64_t len, const Acc* const* x, Acc* res) {
    for (int64_t j = 0; j < len; ++j) {
      const int c = counts(x, j);
      const Acc share = c > 1 ? Acc(1) / static_cast<Acc>(c) : Acc(0);
      Acc delta = 0;
      for (size_t k = 0; k < K; ++k) {
        const Acc tau = x[k + 1][j] - x[0][j];
        if (std::abs(tau) > eps) delta += tau * ((c == 1 ? lam[k] : Acc(0)) + share);
        else delta += Acc(0) * tau;
      }
      res[j] = x[0][j] + delta;
    }
  });
}

bool ram_stream(const Args& a, bool plus, const ChunkSource& s, const ChunkSink& o) {
  return a.spec.compute == at::kDouble ? ram_stream_t<double>(a, plus, s, o) : ram_stream_t<float>(a, plus, s, o);
}
bool stream_ram(const Args& a, const ChunkSource& s, const ChunkSink& o) { return ram_stream(a, false, s, o); }
bool stream_ramplus_tl(const Args& a, const ChunkSource& s, const ChunkSink& o) { return ram_stream(a, true, s, o); }

}  // namespace

Method ram_method() { return {{"ram", BaseUse::Required, 1, 0}, run_ram, false, nullptr, true, stream_ram}; }
Method ramplus_tl_method() {
  return {{"ramplus_tl", BaseUse::Required, 1, 0}, run_ramplus_tl, false, nullptr, true, stream_ramplus_tl};
}

}  // namespace merge
}  // namespace tangent
