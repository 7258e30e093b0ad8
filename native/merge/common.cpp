// The pieces the merge methods share (method.h).
#include "method.h"

#include "../ops.h"

#include <ATen/Parallel.h>

#include <functional>

namespace tangent {
namespace merge {

std::vector<at::Tensor> Context::task_vectors() const {
  std::vector<at::Tensor> taus;
  for (const auto& m : models) taus.push_back(m - base);
  return taus;
}

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

at::Tensor ascending_ranks(const at::Tensor& tau) {
  const int64_t n = tau.numel();
  at::Tensor order = std::get<1>(at::sort(tau.reshape({n}).abs(), /*stable=*/true, /*dim=*/0, /*descending=*/false));
  at::Tensor ranks = at::empty({n}, tau.options());
  ranks.index_put_({order}, at::arange(n, tau.options()));
  return ranks.view(tau.sizes());
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

at::Tensor bernoulli_mask(const at::Tensor& tau, double p, uint64_t seed) {
  at::Tensor m = at::empty(tau.sizes(), at::TensorOptions().dtype(at::kFloat));
  float* d = m.data_ptr<float>();
  at::parallel_for(0, m.numel(), 65536, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) d[i] = uniform_at(seed, static_cast<uint64_t>(i)) < p ? 1.0f : 0.0f;
  });
  return m.to(tau.device(), tau.scalar_type());
}

at::Tensor bernoulli_mask(const at::Tensor& tau, const at::Tensor& p, uint64_t seed) {
  const at::Tensor probs = p.to(at::kCPU, at::kDouble).expand(tau.sizes()).contiguous();
  const double* q = probs.data_ptr<double>();
  at::Tensor m = at::empty(tau.sizes(), at::TensorOptions().dtype(at::kFloat));
  float* d = m.data_ptr<float>();
  at::parallel_for(0, m.numel(), 65536, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) d[i] = uniform_at(seed, static_cast<uint64_t>(i)) < q[i] ? 1.0f : 0.0f;
  });
  return m.to(tau.device(), tau.scalar_type());
}

at::Tensor elect_and_merge(const std::vector<at::Tensor>& taus, const std::vector<double>& w, bool weighted, bool normalize) {
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
  if (!normalize) return num;
  return at::where(den != 0, num / den, at::zeros_like(num));
}

Gram gram_of(const Context& c) {
  std::vector<at::Tensor> v;
  if (c.has_base) v.push_back(c.base.reshape({-1}).to(at::kDouble));
  for (const auto& m : c.models) {
    at::Tensor x = m.reshape({-1}).to(at::kDouble);
    v.push_back(c.has_base ? x - v[0] : x);
  }
  Gram g;
  g.m = v.size();
  g.has_base = c.has_base;
  g.g.assign(g.m * g.m, 0.0);
  for (size_t a = 0; a < g.m; ++a)
    for (size_t b = a; b < g.m; ++b) g.g[a * g.m + b] = g.g[b * g.m + a] = at::dot(v[a], v[b]).item<double>();
  return g;
}

at::Tensor run_combination(const Context& c) {
  const Method& m = find(c.spec.method);
  const std::vector<double> coef = m.coefficients(c, m.uses_gram ? gram_of(c) : Gram{});
  std::vector<at::Tensor> all;
  if (c.has_base) all.push_back(c.base);
  all.insert(all.end(), c.models.begin(), c.models.end());
  return combine(at::Tensor(), all, coef, c.spec.compute, c.spec.compute);
}

double norm64(const at::Tensor& x) { return x.reshape({-1}).to(at::kDouble).norm().item<double>(); }
double dot64(const at::Tensor& x, const at::Tensor& y) {
  return at::dot(x.reshape({-1}).to(at::kDouble), y.reshape({-1}).to(at::kDouble)).item<double>();
}

}  // namespace merge

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
