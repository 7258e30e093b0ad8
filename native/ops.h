// Fused task-vector kernels.
#pragma once

#include "common.h"

namespace tangent {

// out = base + Σ_k coeffs[k] · inputs[k], element by element in one pass through memory,
// accumulating in `compute` (float32 or float64) and written as `out_dtype`. `base` may be
// undefined (zero). All tensors must have one shape, dtype and device. Multi-threaded with
// at::parallel_for on the CPU; on other devices it runs as a chain of ATen ops.
at::Tensor combine(const at::Tensor& base, const std::vector<at::Tensor>& inputs,
                   const std::vector<double>& coeffs, at::ScalarType compute,
                   at::ScalarType out_dtype);

// The same over many tensors (a whole state dict) in one call, each with its own output dtype.
std::vector<at::Tensor> combine_all(const std::vector<at::Tensor>& bases,
                                    const std::vector<std::vector<at::Tensor>>& inputs,
                                    const std::vector<double>& coeffs, at::ScalarType compute,
                                    const std::vector<at::ScalarType>& out_dtypes);

// The naive reference: one ATen operation at a time (allocates a temporary per term).
at::Tensor combine_naive(const at::Tensor& base, const std::vector<at::Tensor>& inputs,
                         const std::vector<double>& coeffs, at::ScalarType compute,
                         at::ScalarType out_dtype);

}  // namespace tangent
