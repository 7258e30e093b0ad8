// Fused optimizer steps: one AsyncWorker per step over all parameters.
#include "addon_data.h"
#include "optim.h"

namespace tangent_js {
namespace {

// adamwStep(params, expAvg, expAvgSq, grads, {lr, beta1, beta2, eps, weightDecay, maxGradNorm, step})
//   -> Promise<{gradNorm, clipCoef}>; updates params and both moments in place.
Napi::Value AdamWStep(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    auto params = TensorList(env, info[0], "parameter");
    auto m = TensorList(env, info[1], "exp_avg");
    auto v = TensorList(env, info[2], "exp_avg_sq");
    auto g = TensorList(env, info[3], "gradient");
    auto o = info[4].IsObject() ? info[4].As<Napi::Object>() : Napi::Object::New(env);
    tangent::AdamWOptions opt;
    opt.lr = NumberOr(o, "lr", opt.lr);
    opt.beta1 = NumberOr(o, "beta1", opt.beta1);
    opt.beta2 = NumberOr(o, "beta2", opt.beta2);
    opt.eps = NumberOr(o, "eps", opt.eps);
    opt.weight_decay = NumberOr(o, "weightDecay", opt.weight_decay);
    opt.max_grad_norm = NumberOr(o, "maxGradNorm", opt.max_grad_norm);
    opt.step = static_cast<int64_t>(NumberOr(o, "step", 1));
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
    auto ts = TensorList(env, info[0], "tensor");
    return NumberTask(env, "tangent.globalNorm", [ts] { return tangent::global_norm(ts); });
  });
}

}  // namespace

Napi::Object InitOptim(Napi::Env env, Napi::Object exports) {
  exports.Set("adamwStep", Napi::Function::New(env, AdamWStep));
  exports.Set("globalNorm", Napi::Function::New(env, GlobalNorm));
  return exports;
}

}  // namespace tangent_js
