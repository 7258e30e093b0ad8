// Model-merging methods on one tensor at a time (so merges can stream tensor by tensor), one file
// per method in native/merge/ behind the registry of native/merge/registry.cpp.
// Exact semantics: docs/merging.md.
#pragma once

#include <string>
#include <vector>

#include "common.h"

namespace tangent {

// What a merge computes, for one tensor. Per-model values (weights, density, gamma, epsilon) hold
// one entry per model, or are empty for the default; the lib layer fills them (and checks which
// apply to which method, lib/merge/methods.ts).
struct MergeSpec {
  std::string method = "task_arithmetic";  // a name in merge_methods()
  std::vector<double> weights;             // w_k (empty: 1 each)
  double lambda = 1.0;                     // scale of the merged task vector
  std::vector<double> density;             // fraction kept (TIES trim, DARE/DELLA keep probability, breadcrumbs); empty: 1
  std::vector<double> gamma;               // breadcrumbs: fraction of largest-magnitude entries dropped; empty: 0
  std::vector<double> epsilon;             // della: spread of the keep probabilities around density; empty: 0
  bool weighted_election = true;           // sign election on weighted (true) or raw sparsified deltas
  bool normalize = false;                  // linear, the task-vector family: divide by Σ w_k (mergekit's normalize)
  bool rescale = true;                     // della: scale kept entries by 1/p (DARE always does)
  uint64_t seed = 0;                       // DARE/DELLA masks: seeded per (seed, tensor name, model index)
  double t = 0.5;                          // slerp: interpolation factor; nearswap: distance threshold
  double select_topk = 1.0;                // sce: fraction of entries with the largest variance kept
  double scale = 1.0;                      // passthrough: factor on the one model's tensor
  int64_t max_iter = 10;                   // karcher: iterations at most
  double tol = 1e-5;                       // karcher: stop when the tangent step's norm is below
  double eps = 1e-8;                       // multislerp: added to norms (mergekit's eps)
  bool normalize_weights = true;           // multislerp: divide the weights by their sum
  bool flatten = true;                     // nuslerp: the whole tensor as one vector (false: rows or columns)
  bool row_wise = false;                   // nuslerp with flatten = false: rows (true) or columns
  double ram_epsilon = 1e-5;               // ram, ramplus_tl: |τ| at or below it counts as unchanged
  double ram_r = 0.1;                      // ramplus_tl: overlap fraction
  double ram_alpha = 0.2;                  // ramplus_tl: rescale strength
  at::ScalarType compute = at::kFloat;
  at::ScalarType out = at::kFloat;
};

// How a method uses the base model: needs it (the task-vector methods), takes none (linear,
// passthrough, karcher: every input is a model), or either (nuslerp, multislerp: with a base they
// work on task vectors).
enum class BaseUse { Required, None, Optional };

struct MergeMethodInfo {
  const char* name;
  BaseUse base;
  size_t min_models;  // models beside the base
  size_t max_models;  // 0: any number
};

// The registered methods, in the registry's order.
std::vector<MergeMethodInfo> merge_methods();
const MergeMethodInfo& merge_method(const std::string& name);  // Argument error naming the known ones

// One named tensor merged by spec.method: for the task-vector methods θ0 + λ·merge_k(w_k, τ_k) with
// τ_k = models[k] − base; for the others the point they pick (docs/merging.md). `base` is undefined
// for methods that take none. Integer tensors are returned unchanged (the base's, else the first
// model's), since task vectors leave them out.
at::Tensor merge_tensor(const std::string& name, const at::Tensor& base, const std::vector<at::Tensor>& models,
                        const MergeSpec& spec);

// Σ over tensors of ⟨a_i, b_i⟩, accumulated in float64.
double dot_all(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b);

// dst.copy_(src): the memcpy baseline of the merge benchmark.
void copy_into(at::Tensor& dst, const at::Tensor& src);

}  // namespace tangent
