// Fused task-vector kernels, exposed as one AsyncWorker per call.
#include "addon_data.h"
#include "ops.h"

namespace tangent_js {
namespace {

// combine(bases: (Tensor|null)[], inputs: Tensor[][], coeffs: number[], compute, out,
//         naive?: boolean) -> Promise<Tensor[]>
Napi::Value Combine(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    auto bases_arr = info[0].As<Napi::Array>();
    auto inputs_arr = info[1].As<Napi::Array>();
    auto coeffs_arr = info[2].As<Napi::Array>();
    std::vector<at::Tensor> bases(bases_arr.Length());
    std::vector<std::vector<at::Tensor>> inputs(inputs_arr.Length());
    for (uint32_t i = 0; i < bases.size(); ++i) {
      auto b = bases_arr.Get(i);
      if (!b.IsNull() && !b.IsUndefined()) bases[i] = UnwrapTensor(env, b, "base " + std::to_string(i));
    }
    for (uint32_t i = 0; i < inputs.size(); ++i) {
      auto row = inputs_arr.Get(i).As<Napi::Array>();
      for (uint32_t k = 0; k < row.Length(); ++k)
        inputs[i].push_back(UnwrapTensor(env, row.Get(k), "input " + std::to_string(i) + "." + std::to_string(k)));
    }
    std::vector<double> coeffs(coeffs_arr.Length());
    for (uint32_t k = 0; k < coeffs.size(); ++k) coeffs[k] = coeffs_arr.Get(k).As<Napi::Number>().DoubleValue();
    const auto compute = ParseDType(info[3].As<Napi::String>());
    const auto out_dtype = ParseDType(info[4].As<Napi::String>());
    const bool naive = info[5].IsBoolean() && info[5].As<Napi::Boolean>();
    auto out = std::make_shared<std::vector<at::Tensor>>();
    return Task::Run(
        env, "tangent.combine",
        [bases, inputs, coeffs, compute, out_dtype, naive, out] {
          if (!naive) {
            *out = tangent::combine_all(bases, inputs, coeffs, compute, out_dtype);
            return;
          }
          for (size_t i = 0; i < bases.size(); ++i)
            out->push_back(tangent::combine_naive(bases[i], inputs[i], coeffs, compute, out_dtype));
        },
        [out](Napi::Env env) -> Napi::Value {
          auto arr = Napi::Array::New(env, out->size());
          for (uint32_t i = 0; i < out->size(); ++i) arr.Set(i, WrapTensor(env, (*out)[i]));
          return arr;
        });
  });
}

}  // namespace

Napi::Object InitOps(Napi::Env env, Napi::Object exports) {
  exports.Set("combine", Napi::Function::New(env, Combine));
  return exports;
}

}  // namespace tangent_js
