// Batched matrix products of many small matrices (attention's per-head [T, hd] × [hd, T]).
#pragma once

#include "common.h"

namespace tangent {

// out[..., m, p] = alpha · Σ_i a_i[..., m, k_i] · b_i[..., k_i, p] over one or two terms (the
// second empty for one), batch dims the same for all (1 or 2 of them), differentiable in reverse
// mode (its backward is again batched_matmul). The operands may be any strided views whose
// matrices are row- or column-major (a head's slice of a fused qkv projection, a transposed key):
// no copies. `out_order`, when given, is the memory order of the result's dims (e.g. {0, 2, 1, 3}
// stores [B, H, T, hd] as [B, T, H, hd], the layout the output projection reads); a layout
// request only: the at::matmul fallback returns a contiguous result.
//
// On the CPU, for float32/float64 matrices small enough that the BLAS runs each on one thread, it
// calls the BLAS's gemm once per matrix straight on those strides, split over libtorch's threads
// (the second term accumulating with beta = 1): libtorch 1.13's CPU bmm spends ~10 µs of tensor
// bookkeeping per matrix (a select and an addmm call each), more than a 50×32 by 32×50 product
// costs, and 4-D matmul copies strided operands first. Anywhere else (CUDA, other dtypes, larger
// matrices, no sgemm_/dgemm_ in the process) and for dual (forward-mode AD) operands (this op
// has no forward-mode formula) it is at::matmul.
using MatmulTerm = std::pair<at::Tensor, at::Tensor>;
at::Tensor batched_matmul(const MatmulTerm& t1, const MatmulTerm& t2 = {}, double alpha = 1,
                          std::vector<int64_t> out_order = {});

}  // namespace tangent
