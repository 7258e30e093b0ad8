// The internal surface of one merge method (native/merge/*.cpp) and the pieces they share:
// magnitude ranks, DARE/DELLA masks, sign election, float64 norms. Registered in registry.cpp.
#pragma once

#include <string>
#include <vector>

#include "../merge.h"

namespace tangent {
namespace merge {

// One tensor's merge as a method sees it: the inputs converted to the compute dtype once, in the
// order given (base undefined where the method takes none), float tensors only.
struct Context {
  const std::string& name;
  const at::Tensor& base;
  const std::vector<at::Tensor>& models;
  const MergeSpec& spec;

  size_t count() const { return models.size(); }
  double weight(size_t k) const { return spec.weights.empty() ? 1.0 : spec.weights[k]; }
  double density(size_t k) const { return spec.density.empty() ? 1.0 : spec.density[k]; }
  double gamma(size_t k) const { return spec.gamma.empty() ? 0.0 : spec.gamma[k]; }
  double epsilon(size_t k) const { return spec.epsilon.empty() ? 0.0 : spec.epsilon[k]; }
  // τ_k = models[k] − base.
  std::vector<at::Tensor> task_vectors() const;
};

using Run = at::Tensor (*)(const Context&);

struct Method {
  MergeMethodInfo info;
  Run run;
  // Whether run() takes the inputs in their own dtype (it converts, fusing the conversion; task
  // arithmetic) instead of converted to the compute dtype first.
  bool raw_inputs = false;
};

const std::vector<Method>& registry();
const Method& find(const std::string& name);

// ---- shared pieces (common.cpp) ----

// Boolean mask of the entries whose magnitude rank (0 = largest; ties broken by lower flat index
// first) lies in [start, start + count).
at::Tensor rank_mask(const at::Tensor& tau, int64_t start, int64_t count);
// Each entry's magnitude rank in ascending order (0 = smallest; ties by lower flat index first), as
// a tensor of tau's shape in tau's dtype.
at::Tensor ascending_ranks(const at::Tensor& tau);
// round(d · n) clamped to [0, n].
int64_t keep_count(double density, int64_t n);
// The seed of model k's mask for tensor `name`: independent of tensor order, device and threads.
uint64_t mask_seed(uint64_t seed, const std::string& name, size_t k);
// Bernoulli(p) keep mask (p one probability, or a tensor of them per entry), drawn on the CPU
// generator seeded by `seed` in float32, returned in tau's dtype and device.
at::Tensor bernoulli_mask(const at::Tensor& tau, double p, uint64_t seed);
at::Tensor bernoulli_mask(const at::Tensor& tau, const at::Tensor& p, uint64_t seed);
// TIES sign election and disjoint mean over already sparsified deltas: γ = sign(Σ_k c_k τ_k) with
// c_k = w_k (weighted) or 1; merged = Σ_{k agrees} w_k τ_k / Σ_{k agrees} w_k, 0 where none agrees.
// With `normalize` false the numerator is returned undivided (mergekit's normalize: false).
at::Tensor elect_and_merge(const std::vector<at::Tensor>& taus, const std::vector<double>& w, bool weighted,
                           bool normalize = true);
// ‖x‖ and ⟨x, y⟩ of whole tensors, accumulated in float64.
double norm64(const at::Tensor& x);
double dot64(const at::Tensor& x, const at::Tensor& y);
// Spherical interpolation of whole tensors (slerp.cpp; nuslerp and karcher use it too).
at::Tensor slerp(const at::Tensor& v0, const at::Tensor& v1, double t);

// Below this norm a tensor has no direction; above this |cos| two are taken as parallel (mergekit's
// DOT_THRESHOLD): both cases interpolate linearly.
constexpr double kSlerpEps = 1e-8;
constexpr double kSlerpParallel = 0.9995;

}  // namespace merge
}  // namespace tangent
