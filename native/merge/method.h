// The internal surface of one merge method (native/merge/*.cpp) and the pieces they share:
// magnitude ranks, DARE/DELLA masks, sign election, float64 norms. Registered in registry.cpp.
#pragma once

#include <string>
#include <vector>

#include "../merge.h"

namespace tangent {
namespace merge {

// What a method knows of one tensor's merge before reading it: the name, the spec, how many models
// and whether a base is given.
struct Args {
  const std::string& name;
  const MergeSpec& spec;
  size_t n;       // models beside the base
  bool has_base;
  std::vector<int64_t> shape;  // the tensor's

  size_t count() const { return n; }
  double weight(size_t k) const { return spec.weights.empty() ? 1.0 : spec.weights[k]; }
  double density(size_t k) const { return spec.density.empty() ? 1.0 : spec.density[k]; }
  double gamma(size_t k) const { return spec.gamma.empty() ? 0.0 : spec.gamma[k]; }
  double epsilon(size_t k) const { return spec.epsilon.empty() ? 0.0 : spec.epsilon[k]; }
};

// One tensor's merge as a method sees it: the inputs converted to the compute dtype once, in the
// order given (base undefined where the method takes none), float tensors only.
struct Context : Args {
  const at::Tensor& base;
  const std::vector<at::Tensor>& models;

  Context(const std::string& name, const at::Tensor& base, const std::vector<at::Tensor>& models, const MergeSpec& spec)
      : Args{name, spec, models.size(), base.defined(), models.empty() ? std::vector<int64_t>{} : models[0].sizes().vec()},
        base(base),
        models(models) {}
  // τ_k = models[k] − base.
  std::vector<at::Tensor> task_vectors() const;
};

using Run = at::Tensor (*)(const Context&);

// Inner products of one tensor's inputs, accumulated in float64: over v_0 = θ0, v_k = θ_k − θ0
// (k = 1 … K) where a base is given, over v_k = θ_k (k = 0 … K − 1) where not, so task vectors'
// products do not cancel against ‖θ0‖².
struct Gram {
  size_t m = 0;              // vectors
  bool has_base = false;
  std::vector<double> g;     // m × m, row major
  double v(size_t i, size_t j) const { return g[i * m + j]; }
  // ⟨x_i, x_j⟩ of the inputs as given (the base first where there is one).
  double raw(size_t i, size_t j) const;
  // ⟨X_k, X_l⟩ of models k, l (0-based, beside the base): their task vectors with a base, else the models.
  double model(size_t k, size_t l) const { return has_base ? v(k + 1, l + 1) : v(k, l); }
};

// A linear-combination method: its result is Σ_i c_i x_i over the inputs (the base first where
// given) with c from the inputs' Gram matrix alone (slerp, nuslerp over whole tensors, multislerp,
// karcher, model_stock, linear, passthrough). The file merge streams these in two passes (the
// Gram, then the fused combine), in memory bounded by its chunk buffers; merge_tensor on the CPU
// runs the same passes, so both give the same bits (merge/stream.h).
using Coefficients = std::vector<double> (*)(const Args&, const Gram&);

class ChunkSource;
class ChunkSink;
// A method that streams entry by entry, after passes of its own over the chunks (the TIES family's
// magnitude thresholds): writes every chunk of the output to the sink (merge/stream.h).
using Stream = bool (*)(const Args&, const ChunkSource&, const ChunkSink&);  // true: some output is NaN or ±Inf

struct Method {
  MergeMethodInfo info;
  Run run;
  // Whether run() takes the inputs in their own dtype (it converts, fusing the conversion; task
  // arithmetic) instead of converted to the compute dtype first.
  bool raw_inputs = false;
  Coefficients coefficients = nullptr;  // set for the linear-combination methods (run is then run_combination)
  bool uses_gram = true;                // whether the coefficients read the Gram (linear and passthrough do not)
  Stream stream = nullptr;              // set where the method streams entry by entry (CPU)
  // Where set and true for a tensor, that tensor is merged whole by run (nuslerp's rows and columns).
  bool (*whole)(const MergeSpec& spec, int64_t dim) = nullptr;
  // Whether a tensor of `dim` dimensions streams (merge/stream.h).
  bool streams(const MergeSpec& spec, int64_t dim) const {
    return (coefficients != nullptr || stream != nullptr) && !(whole != nullptr && whole(spec, dim));
  }
};

// Task arithmetic's coefficients over [θ0, θ_1 … θ_K] (task_arithmetic.cpp; the file merge's fused
// pass uses them too).
std::vector<double> task_arithmetic_coefficients(const MergeSpec& spec, size_t models);

// run for the linear-combination methods on any device: the Gram from whole tensors (float64),
// the method's coefficients, the combine.
at::Tensor run_combination(const Context& c);
// The Gram of the context's inputs, from whole tensors.
Gram gram_of(const Context& c);

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
// A uniform number in [0, 1) for entry i (flat index) of the mask seeded by `seed`: SplitMix64 of
// seed + (i + 1)·φ, its top 53 bits. A counter-based draw, so a mask is the same whole or chunk by
// chunk, on every device and thread count.
inline double uniform_at(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}
// Bernoulli(p) keep mask (p one probability, or a tensor of them per entry): entry i kept where
// uniform_at(seed, i) < p; returned in tau's dtype and device.
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

// Below this norm a tensor has no direction; above this |cos| two are taken as parallel (mergekit's
// DOT_THRESHOLD): both cases interpolate linearly.
constexpr double kSlerpEps = 1e-8;
constexpr double kSlerpParallel = 0.9995;

}  // namespace merge
}  // namespace tangent
