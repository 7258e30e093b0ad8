// Analyses of the paper: the empirical NTK Gram matrix and a symmetric eigendecomposition, each
// an AsyncWorker returning a Promise.
#include "addon_data.h"
#include "ntk.h"

namespace tangent_js {
namespace {

using tangent::ErrorKind;

// ntkGram(model, x, params|null, {output, dtype, maxMemoryBytes}) -> Promise<{gram, ...}>
Napi::Value NtkGram(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    auto m = UnwrapModel(env, info[0], "model");
    at::Tensor x = UnwrapTensor(env, info[1], "input");
    std::vector<at::Tensor> state = (info[2].IsNull() || info[2].IsUndefined())
                                        ? m->own_state()
                                        : m->resolve(UnwrapNamed(env, info[2], "params"));
    tangent::NtkOptions opts;
    if (info[3].IsObject()) {
      auto o = info[3].As<Napi::Object>();
      if (o.Get("output").IsNumber()) opts.output = o.Get("output").As<Napi::Number>().Int64Value();
      if (o.Get("dtype").IsString()) opts.jacobian_dtype = ParseDType(o.Get("dtype").As<Napi::String>());
      if (o.Get("maxMemoryBytes").IsNumber())
        opts.max_memory_bytes = o.Get("maxMemoryBytes").As<Napi::Number>().Int64Value();
      if (o.Get("workers").IsNumber()) opts.workers = o.Get("workers").As<Napi::Number>().Int64Value();
    }
    auto out = std::make_shared<tangent::NtkResult>();
    return Task::Run(env, "tangent.ntkGram", [m, x, state, opts, out] { *out = tangent::empirical_ntk(*m, x, state, opts); },
                     [out](Napi::Env env) -> Napi::Value {
                       auto o = Napi::Object::New(env);
                       o.Set("gram", WrapTensor(env, out->gram));
                       o.Set("outputs", static_cast<double>(out->outputs));
                       o.Set("params", static_cast<double>(out->params));
                       o.Set("forwardPasses", static_cast<double>(out->forward_passes));
                       o.Set("backwardPasses", static_cast<double>(out->backward_passes));
                       o.Set("jacobianRows", static_cast<double>(out->jacobian_rows));
                       o.Set("capacityRows", static_cast<double>(out->capacity_rows));
                       o.Set("peakJacobianBytes", static_cast<double>(out->peak_jacobian_bytes));
                       o.Set("strategy", out->strategy);
                       o.Set("passes", static_cast<double>(out->passes));
                       o.Set("workers", static_cast<double>(out->workers));
                       return o;
                     });
  });
}

// eighSymmetric(k, topK) -> Promise<{values, vectors}> (descending eigenvalues)
Napi::Value EighSymmetric(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    at::Tensor k = UnwrapTensor(env, info[0], "matrix");
    const int64_t top = info[1].IsNumber() ? info[1].As<Napi::Number>().Int64Value() : 0;
    auto out = std::make_shared<tangent::EighResult>();
    return Task::Run(env, "tangent.eigh", [k, top, out] { *out = tangent::symmetric_eigh(k, top); },
                     [out](Napi::Env env) -> Napi::Value {
                       auto o = Napi::Object::New(env);
                       o.Set("values", WrapTensor(env, out->values));
                       o.Set("vectors", WrapTensor(env, out->vectors));
                       return o;
                     });
  });
}

}  // namespace

Napi::Object InitAnalysis(Napi::Env env, Napi::Object exports) {
  exports.Set("ntkGram", Napi::Function::New(env, NtkGram));
  exports.Set("eighSymmetric", Napi::Function::New(env, EighSymmetric));
  return exports;
}

}  // namespace tangent_js
