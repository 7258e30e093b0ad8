#include "../merge.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <functional>

#include "../ops.h"

namespace tangent {
namespace {

// Boolean mask of the entries whose magnitude rank (0 = largest; ties broken by lower flat
// index first) lies in [start, start + count).
at::Tensor rank_mask(const at::Tensor& tau, int64_t start, int64_t count) {
  const int64_t n = tau.numel();
  at::Tensor flat = tau.reshape({n});
  at::Tensor mask = at::zeros({n}, flat.options().dtype(at::kBool));
  start = std::max<int64_t>(0, std::min(start, n));
  count = std::max<int64_t>(0, std::min(count, n - start));
  if (count == 0) return mask.view(tau.sizes());
  if (start == 0 && count == n) return mask.fill_(true).view(tau.sizes());
  at::Tensor order = std::get<1>(at::sort(flat.abs(), /*stable=*/true, /*dim=*/0, /*descending=*/true));
  mask.index_put_({order.slice(0, start, start + count)}, true);
  return mask.view(tau.sizes());
}

int64_t keep_count(double density, int64_t n) {
  return std::max<int64_t>(0, std::min<int64_t>(n, std::llround(density * static_cast<double>(n))));
}

uint64_t mask_seed(uint64_t seed, const std::string& name, size_t k) {
  uint64_t h = std::hash<std::string>{}(name);
  h ^= seed + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h ^= (static_cast<uint64_t>(k) + 1) * 0xbf58476d1ce4e5b9ULL;
  return h;
}

// Keep each entry with probability `density` (seeded), rescale kept entries by 1/density.
at::Tensor dare(const at::Tensor& tau, double density, uint64_t seed) {
  if (density >= 1.0) return tau;
  if (density <= 0.0) return at::zeros_like(tau);
  auto gen = at::detail::createCPUGenerator(seed);
  at::Tensor keep = at::empty(tau.sizes(), at::kFloat).bernoulli_(density, gen).to(tau.device(), tau.scalar_type());
  return tau * keep / density;
}

// TIES sign election and disjoint mean over already sparsified deltas.
at::Tensor elect_and_merge(const std::vector<at::Tensor>& taus, const std::vector<double>& w, bool weighted) {
  at::Tensor mass = at::zeros_like(taus[0]);
  for (size_t k = 0; k < taus.size(); ++k) mass.add_(taus[k], weighted ? w[k] : 1.0);
  at::Tensor sign = mass.sign();
  at::Tensor num = at::zeros_like(taus[0]);
  at::Tensor den = at::zeros_like(taus[0]);
  for (size_t k = 0; k < taus.size(); ++k) {
    at::Tensor agree = (taus[k].sign() == sign).logical_and(taus[k] != 0).to(taus[k].scalar_type());
    num.add_(taus[k] * agree, w[k]);
    den.add_(agree, w[k]);
  }
  return at::where(den != 0, num / den, at::zeros_like(num));
}

// ‖x‖ and ⟨x, y⟩ of whole tensors, accumulated in float64.
double norm64(const at::Tensor& x) { return x.reshape({-1}).to(at::kDouble).norm().item<double>(); }
double dot64(const at::Tensor& x, const at::Tensor& y) {
  return at::dot(x.reshape({-1}).to(at::kDouble), y.reshape({-1}).to(at::kDouble)).item<double>();
}

// Below this norm a tensor has no direction; above this |cos| two are taken as parallel (mergekit's
// DOT_THRESHOLD): both cases interpolate linearly.
constexpr double kSlerpEps = 1e-8;
constexpr double kSlerpParallel = 0.9995;

// Spherical interpolation of the whole tensors v0 → v1 by t, on the angle between their directions,
// applied to the unnormalized tensors (Shoemake 1985, as mergekit's slerp).
at::Tensor slerp(const at::Tensor& v0, const at::Tensor& v1, double t) {
  const double n0 = norm64(v0), n1 = norm64(v1);
  const double cos = n0 > kSlerpEps && n1 > kSlerpEps ? dot64(v0, v1) / (n0 * n1) : 1.0;
  if (std::abs(cos) > kSlerpParallel) return v0 * (1.0 - t) + v1 * t;
  const double theta = std::acos(cos), s = std::sin(theta);
  return v0 * (std::sin((1.0 - t) * theta) / s) + v1 * (std::sin(t * theta) / s);
}

// Entry by entry: w = clamp(t / |v1 − v0|, 0, 1) (1 where the entries are equal), v0 + w (v1 − v0):
// entries closer than t take v1's value, farther ones move t towards it.
at::Tensor nearswap(const at::Tensor& v0, const at::Tensor& v1, double t) {
  at::Tensor d = (v1 - v0).abs();
  at::Tensor w = at::where(d == 0, at::ones_like(d), (t / d).clamp(0.0, 1.0));
  return v0 + w * (v1 - v0);
}

// Model Stock (Jang et al. 2024): with the mean cosine c of the task vectors' pairs and N models,
// t = N c / (1 + (N − 1) c); θ0 + t (mean_k θ_k − θ0).
at::Tensor model_stock(const at::Tensor& b, const std::vector<at::Tensor>& taus) {
  const size_t n = taus.size();
  std::vector<double> norms;
  for (const auto& tau : taus) norms.push_back(norm64(tau));
  double cos_sum = 0;
  size_t pairs = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j, ++pairs)
      cos_sum += norms[i] > kSlerpEps && norms[j] > kSlerpEps ? dot64(taus[i], taus[j]) / (norms[i] * norms[j]) : 0.0;
  const double c = cos_sum / static_cast<double>(pairs);
  const double den = 1.0 + static_cast<double>(n - 1) * c;
  const double t = std::abs(den) > 1e-12 ? static_cast<double>(n) * c / den : 0.0;
  at::Tensor mean = at::zeros_like(b);
  for (const auto& tau : taus) mean.add_(tau, 1.0 / static_cast<double>(n));
  return b + mean * t;
}

}  // namespace

MergeMethod parse_merge_method(const std::string& n) {
  if (n == "task_arithmetic") return MergeMethod::TaskArithmetic;
  if (n == "ties") return MergeMethod::Ties;
  if (n == "dare_linear") return MergeMethod::DareLinear;
  if (n == "dare_ties") return MergeMethod::DareTies;
  if (n == "breadcrumbs") return MergeMethod::Breadcrumbs;
  if (n == "slerp") return MergeMethod::Slerp;
  if (n == "nearswap") return MergeMethod::Nearswap;
  if (n == "model_stock") return MergeMethod::ModelStock;
  fail(ErrorKind::Argument, "unknown merge method '", n,
       "' (expected task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, slerp, nearswap or model_stock)");
}

at::Tensor merge_tensor(const std::string& name, const at::Tensor& base,
                        const std::vector<at::Tensor>& finetuned, const std::vector<double>& weights,
                        const MergeSpec& s) {
  check(finetuned.size() == weights.size(), ErrorKind::Argument, "merge: ", finetuned.size(),
        " models but ", weights.size(), " weights");
  for (size_t k = 0; k < finetuned.size(); ++k) {
    check(finetuned[k].sizes() == base.sizes(), ErrorKind::Shape, "merge: tensor '", name, "' of model ", k,
          " has shape ", shape_str(finetuned[k].sizes()), ", the base has ", shape_str(base.sizes()));
    check(finetuned[k].scalar_type() == base.scalar_type(), ErrorKind::DType, "merge: tensor '", name,
          "' of model ", k, " is ", c10::toString(finetuned[k].scalar_type()), ", the base is ",
          c10::toString(base.scalar_type()));
  }
  if (!at::isFloatingType(base.scalar_type())) return base.clone();
  compat::NoGradGuard no_grad;
  if (s.method == MergeMethod::TaskArithmetic) {
    // θ0 + λ Σ w_k (θ_k − θ0) = (1 − λ Σ w_k) θ0 + Σ λ w_k θ_k: one fused pass, no τ materialized.
    double wsum = 0;
    std::vector<double> c;
    for (double w : weights) {
      wsum += w;
      c.push_back(s.lambda * w);
    }
    std::vector<at::Tensor> all{base};
    all.insert(all.end(), finetuned.begin(), finetuned.end());
    c.insert(c.begin(), 1.0 - s.lambda * wsum);
    return combine(at::Tensor(), all, c, s.compute, s.out);
  }
  const at::Tensor b = base.to(s.compute);
  if (s.method == MergeMethod::Slerp || s.method == MergeMethod::Nearswap) {
    check(finetuned.size() == 1, ErrorKind::Argument, "merge: ", s.method == MergeMethod::Slerp ? "slerp" : "nearswap",
          " interpolates between the base and exactly one model, got ", finetuned.size());
    const at::Tensor v1 = finetuned[0].to(s.compute);
    return (s.method == MergeMethod::Slerp ? slerp(b, v1, s.t) : nearswap(b, v1, s.t)).to(s.out);
  }
  if (s.method == MergeMethod::ModelStock) {
    check(finetuned.size() >= 2, ErrorKind::Argument, "merge: model_stock needs at least two models beside the base, got ",
          finetuned.size());
    std::vector<at::Tensor> taus;
    for (const auto& f : finetuned) taus.push_back(f.to(s.compute) - b);
    return model_stock(b, taus).to(s.out);
  }
  std::vector<at::Tensor> taus;
  for (size_t k = 0; k < finetuned.size(); ++k) {
    at::Tensor tau = finetuned[k].to(s.compute) - b;
    const int64_t n = tau.numel();
    switch (s.method) {
      case MergeMethod::Ties:
        tau = tau * rank_mask(tau, 0, keep_count(s.density, n));
        break;
      case MergeMethod::DareLinear:
      case MergeMethod::DareTies:
        tau = dare(tau, s.density, mask_seed(s.seed, name, k));
        break;
      case MergeMethod::Breadcrumbs: {
        const int64_t drop_top = keep_count(s.gamma, n);
        tau = tau * rank_mask(tau, drop_top, keep_count(s.density, n));
        break;
      }
      default:
        break;
    }
    taus.push_back(tau);
  }
  at::Tensor merged;
  if (s.method == MergeMethod::Ties || s.method == MergeMethod::DareTies) {
    merged = elect_and_merge(taus, weights, s.weighted_election);
  } else {
    merged = at::zeros_like(b);
    for (size_t k = 0; k < taus.size(); ++k) merged.add_(taus[k], weights[k]);
  }
  return (b + merged * s.lambda).to(s.out);
}

double dot_all(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  check(a.size() == b.size(), ErrorKind::Argument, "dot: ", a.size(), " tensors against ", b.size());
  compat::NoGradGuard no_grad;
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    check(a[i].sizes() == b[i].sizes(), ErrorKind::Shape, "dot: tensor ", i, " has shapes ",
          shape_str(a[i].sizes()), " and ", shape_str(b[i].sizes()));
    s += at::dot(a[i].reshape({-1}).to(at::kDouble), b[i].reshape({-1}).to(at::kDouble)).item<double>();
  }
  return s;
}

void copy_into(at::Tensor& dst, const at::Tensor& src) {
  compat::NoGradGuard no_grad;
  dst.copy_(src);
}

}  // namespace tangent
