// The empirical neural tangent kernel at θ0 and its eigendecomposition (the paper's analysis of
// eigenfunction localization). libtorch only.
#pragma once

#include <string>

#include "model.h"

namespace tangent {

struct NtkOptions {
  // -1: the trace kernel k(x, x') = Σ_c ∇θ f_c(x) · ∇θ f_c(x'); otherwise one output index c.
  int64_t output = -1;
  // dtype in which Jacobian rows are stored and multiplied (float32 or float64). The Gram matrix
  // is accumulated in float64 either way.
  at::ScalarType jacobian_dtype = at::kFloat;
  // Bound on the memory of the Jacobian rows held at once plus the N×N float64 Gram matrix.
  int64_t max_memory_bytes = int64_t(2) << 30;
  // Threads computing per-sample Jacobian rows, each with one intra-op thread. Default 1: on
  // the 2-core OpenMP/OpenBLAS build measured, 2 workers were 3–7× slower than 1 (contention).
  int64_t workers = 1;
};

struct NtkResult {
  at::Tensor gram;               // [N, N] float64, symmetric
  int64_t outputs = 0;           // C, the model's outputs per sample
  int64_t params = 0;            // P, trainable scalars (length of a Jacobian row)
  int64_t forward_passes = 0;    // batch-1 forwards
  int64_t backward_passes = 0;   // batch-1 backward passes (one per Jacobian row computed)
  int64_t jacobian_rows = 0;     // distinct (sample, output) rows: N·C (trace) or N
  int64_t capacity_rows = 0;     // rows the memory budget allows at once
  int64_t peak_jacobian_bytes = 0;
  // "full": J for every row held at once; "grouped": outputs in groups, all samples per group;
  // "panels": one output at a time in row panels (anchor panel × streamed chunks).
  std::string strategy;
  int64_t passes = 0;            // output groups (grouped/full) or anchor panels (panels)
  int64_t workers = 1;           // threads that computed Jacobian rows
};

// Gram matrix of per-sample Jacobians J (rows ∇θ f_c(x_i) at `state`, flattened over all
// parameters in declaration order) on the N inputs of x ([N, ...]): K = Σ_c J_c J_cᵀ (trace) or
// J_c J_cᵀ. Per-sample gradients come from batch-1 forwards and one backward pass per output
// (retaining the graph between outputs); K is formed with a matmul per chunk pair.
NtkResult empirical_ntk(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state,
                        const NtkOptions& opts);

struct EighResult {
  at::Tensor values;   // [N] float64, descending
  at::Tensor vectors;  // [N, k] float64, unit columns, column i for values[i]
};

// Eigendecomposition of a symmetric matrix by at::linalg_eigh (in float64), eigenvalues in
// descending order; `top_k` <= 0 keeps every eigenvector.
EighResult symmetric_eigh(const at::Tensor& k, int64_t top_k);

}  // namespace tangent
