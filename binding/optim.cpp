// Fused optimizer steps: one AsyncWorker per step over all parameters.
#include "addon_data.h"
#include "optim.h"

namespace tangent_js {
namespace {

std::vector<at::Tensor> Tensors(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) throw Napi::TypeError::New(env, what + " must be an array of tensors");
  auto arr = v.As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); ++i) out.push_back(UnwrapTensor(env, arr.Get(i), what + " " + std::to_string(i)));
  return out;
}

double Opt(const Napi::Object& o, const char* key, double dflt) {
  return o.Has(key) && o.Get(key).IsNumber() ? o.Get(key).As<Napi::Number>().DoubleValue() : dflt;
}

// adamwStep(params, expAvg, expAvgSq, grads, {lr, beta1, beta2, eps, weightDecay, maxGradNorm, step})
//   -> Promise<{gradNorm, clipCoef}>; updates params and both moments in place.
Napi::Value AdamWStep(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    auto params = Tensors(env, info[0], "parameter");
    auto m = Tensors(env, info[1], "exp_avg");
    auto v = Tensors(env, info[2], "exp_avg_sq");
    auto g = Tensors(env, info[3], "gradient");
    auto o = info[4].IsObject() ? info[4].As<Napi::Object>() : Napi::Object::New(env);
    tangent::AdamWOptions opt;
    opt.lr = Opt(o, "lr", opt.lr);
    opt.beta1 = Opt(o, "beta1", opt.beta1);
    opt.beta2 = Opt(o, "beta2", opt.beta2);
    opt.eps = Opt(o, "eps", opt.eps);
    opt.weight_decay = Opt(o, "weightDecay", opt.weight_decay);
    opt.max_grad_norm = Opt(o, "maxGradNorm", opt.max_grad_norm);
    opt.step = static_cast<int64_t>(Opt(o, "step", 1));
    auto out = std::make_shared<tangent::AdamWResult>();
    return Task::Run(env, "tangent.adamwStep",
                     [params, m, v, g, opt, out] { *out = tangent::adamw_step(params, m, v, g, opt); },
                     [out](Napi::Env env) -> Napi::Value {
                       auto r = Napi::Object::New(env);
                       r.Set("gradNorm", out->grad_norm);
                       r.Set("clipCoef", out->clip_coef);
                       return r;
                     });
  });
}

// globalNorm(tensors) -> Promise<number>
Napi::Value GlobalNorm(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    auto ts = Tensors(env, info[0], "tensor");
    auto out = std::make_shared<double>(0);
    return Task::Run(env, "tangent.globalNorm", [ts, out] { *out = tangent::global_norm(ts); },
                     [out](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *out); });
  });
}

}  // namespace

Napi::Object InitOptim(Napi::Env env, Napi::Object exports) {
  exports.Set("adamwStep", Napi::Function::New(env, AdamWStep));
  exports.Set("globalNorm", Napi::Function::New(env, GlobalNorm));
  return exports;
}

}  // namespace tangent_js
