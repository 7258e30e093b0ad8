#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../ops.h"

namespace tangent {
namespace {

constexpr int64_t kChunk = 16384;  // elements per task: 64 KiB of float32, cache-resident

template <typename In, typename Acc, typename Out>
void combine_kernel(const In* base, const std::vector<const In*>& in, const std::vector<Acc>& c,
                    Out* out, int64_t n) {
  const size_t K = in.size();
  at::parallel_for(0, n, kChunk, [&](int64_t begin, int64_t end) {
    Acc acc[kChunk];
    for (int64_t s = begin; s < end; s += kChunk) {
      const int64_t len = std::min(kChunk, end - s);
      if (base) {
        const In* b = base + s;
        for (int64_t j = 0; j < len; ++j) acc[j] = static_cast<Acc>(b[j]);
      } else {
        std::fill(acc, acc + len, Acc(0));
      }
      for (size_t k = 0; k < K; ++k) {
        const In* x = in[k] + s;
        const Acc ck = c[k];
        for (int64_t j = 0; j < len; ++j) acc[j] += ck * static_cast<Acc>(x[j]);
      }
      Out* o = out + s;
#if defined(__SSE2__)
      // float32 output: streaming stores skip the read-for-ownership of the output lines.
      if constexpr (std::is_same_v<Out, float> && std::is_same_v<Acc, float>) {
        if ((reinterpret_cast<uintptr_t>(o) & 15) == 0) {
          int64_t j = 0;
          for (; j + 4 <= len; j += 4) _mm_stream_ps(o + j, _mm_loadu_ps(acc + j));
          for (; j < len; ++j) o[j] = acc[j];
          continue;
        }
      }
#endif
      for (int64_t j = 0; j < len; ++j) o[j] = static_cast<Out>(acc[j]);
    }
#if defined(__SSE2__)
    _mm_sfence();
#endif
  });
}

void check_same(const at::Tensor& ref, const at::Tensor& t, size_t k) {
  check(t.sizes() == ref.sizes(), ErrorKind::Shape, "combine: input ", k, " has shape ",
        shape_str(t.sizes()), ", expected ", shape_str(ref.sizes()));
  check(t.scalar_type() == ref.scalar_type(), ErrorKind::DType, "combine: input ", k, " has dtype ",
        c10::toString(t.scalar_type()), ", expected ", c10::toString(ref.scalar_type()));
  check(t.device() == ref.device(), ErrorKind::Device, "combine: input ", k, " is on ",
        t.device().str(), ", expected ", ref.device().str());
}

}  // namespace

at::Tensor combine_naive(const at::Tensor& base, const std::vector<at::Tensor>& inputs,
                         const std::vector<double>& coeffs, at::ScalarType compute,
                         at::ScalarType out_dtype) {
  compat::NoGradGuard no_grad;
  at::Tensor acc = base.defined() ? base.to(compute) : at::zeros_like(inputs.at(0), compute);
  for (size_t k = 0; k < inputs.size(); ++k) acc = acc + inputs[k].to(compute) * coeffs[k];
  return acc.to(out_dtype);
}

at::Tensor combine(const at::Tensor& base, const std::vector<at::Tensor>& inputs,
                   const std::vector<double>& coeffs, at::ScalarType compute,
                   at::ScalarType out_dtype) {
  check(inputs.size() == coeffs.size(), ErrorKind::Argument, "combine: ", inputs.size(),
        " inputs but ", coeffs.size(), " coefficients");
  check(base.defined() || !inputs.empty(), ErrorKind::Argument, "combine: nothing to combine");
  check(compute == at::kFloat || compute == at::kDouble, ErrorKind::DType,
        "combine: compute dtype must be float32 or float64, got ", c10::toString(compute));
  const at::Tensor& ref = base.defined() ? base : inputs[0];
  for (size_t k = 0; k < inputs.size(); ++k) check_same(ref, inputs[k], k);
  check(at::isFloatingType(ref.scalar_type()), ErrorKind::DType,
        "combine: tensors must be floating point, got ", c10::toString(ref.scalar_type()));
  check(at::isFloatingType(out_dtype), ErrorKind::DType, "combine: output dtype must be floating point");
  if (!ref.is_cpu()) return combine_naive(base, inputs, coeffs, compute, out_dtype);

  compat::NoGradGuard no_grad;
  const at::Tensor b = base.defined() ? base.contiguous() : at::Tensor();
  std::vector<at::Tensor> xs;
  xs.reserve(inputs.size());
  for (const auto& x : inputs) xs.push_back(x.contiguous());
  at::Tensor out = at::empty(ref.sizes(), ref.options().dtype(out_dtype));
  const int64_t n = ref.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ref.scalar_type(), "combine_in", [&] {
    using In = scalar_t;
    std::vector<const In*> ptrs;
    for (const auto& x : xs) ptrs.push_back(x.data_ptr<In>());
    const In* bp = b.defined() ? b.data_ptr<In>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out_dtype, "combine_out", [&] {
      using Out = scalar_t;
      if (compute == at::kDouble) {
        std::vector<double> c(coeffs.begin(), coeffs.end());
        combine_kernel<In, double, Out>(bp, ptrs, c, out.data_ptr<Out>(), n);
      } else {
        std::vector<float> c(coeffs.begin(), coeffs.end());
        combine_kernel<In, float, Out>(bp, ptrs, c, out.data_ptr<Out>(), n);
      }
    });
  });
  return out;
}

std::vector<at::Tensor> combine_all(const std::vector<at::Tensor>& bases,
                                    const std::vector<std::vector<at::Tensor>>& inputs,
                                    const std::vector<double>& coeffs, at::ScalarType compute,
                                    const std::vector<at::ScalarType>& out_dtypes) {
  check(bases.size() == inputs.size() && out_dtypes.size() == bases.size(), ErrorKind::Argument,
        "combine: ", bases.size(), " bases, ", inputs.size(), " input lists and ", out_dtypes.size(),
        " output dtypes");
  std::vector<at::Tensor> out(bases.size());
  for (size_t i = 0; i < bases.size(); ++i)
    out[i] = combine(bases[i], inputs[i], coeffs, compute, out_dtypes[i]);
  return out;
}

}  // namespace tangent
