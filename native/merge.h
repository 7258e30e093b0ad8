// Model-merging methods on one tensor at a time (so merges can stream tensor by tensor).
// Exact semantics: docs/merging.md.
#pragma once

#include <string>

#include "common.h"

namespace tangent {

enum class MergeMethod { TaskArithmetic, Ties, DareLinear, DareTies, Breadcrumbs, Slerp, Nearswap, ModelStock };

MergeMethod parse_merge_method(const std::string& name);

struct MergeSpec {
  MergeMethod method = MergeMethod::TaskArithmetic;
  double lambda = 1.0;          // global scale of the merged task vector
  double density = 1.0;         // fraction kept (TIES trim, DARE keep probability, breadcrumbs)
  double gamma = 0.0;           // breadcrumbs: fraction of largest-magnitude entries dropped
  bool weighted_election = true;  // TIES sign election on weighted (true) or raw trimmed deltas
  uint64_t seed = 0;            // DARE masks: seeded per (seed, tensor name, model index)
  double t = 0.5;               // slerp: interpolation factor; nearswap: distance threshold
  at::ScalarType compute = at::kFloat;
  at::ScalarType out = at::kFloat;
};

// θ0 + λ·merge_k(w_k, τ_k) with τ_k = finetuned[k] − base, for one named tensor; or, for the
// interpolating methods (slerp, nearswap: one model; model_stock: two or more), the point they
// pick between the base and the models. Integer tensors are returned unchanged (as the base's),
// since task vectors leave them out.
at::Tensor merge_tensor(const std::string& name, const at::Tensor& base,
                        const std::vector<at::Tensor>& finetuned, const std::vector<double>& weights,
                        const MergeSpec& spec);

// Σ over tensors of ⟨a_i, b_i⟩, accumulated in float64.
double dot_all(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b);

// dst.copy_(src): the memcpy baseline of the merge benchmark.
void copy_into(at::Tensor& dst, const at::Tensor& src);

}  // namespace tangent
