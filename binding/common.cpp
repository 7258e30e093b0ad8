// Small argument and result helpers shared by the binding files (declared in common.h).
#include "common.h"

namespace tangent_js {

std::vector<at::Tensor> TensorList(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) throw Napi::TypeError::New(env, what + " must be an array of tensors");
  auto arr = v.As<Napi::Array>();
  std::vector<at::Tensor> out;
  out.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); ++i) out.push_back(UnwrapTensor(env, arr.Get(i), what + " " + std::to_string(i)));
  return out;
}

double NumberOr(const Napi::Object& o, const char* key, double dflt) {
  return o.Has(key) && o.Get(key).IsNumber() ? o.Get(key).As<Napi::Number>().DoubleValue() : dflt;
}

Napi::Promise TensorTask(Napi::Env env, const char* name, std::function<at::Tensor()> compute) {
  auto out = std::make_shared<at::Tensor>();
  return Task::Run(env, name, [compute = std::move(compute), out] { *out = compute(); },
                   [out](Napi::Env env) -> Napi::Value { return WrapTensor(env, *out); });
}

Napi::Promise NumberTask(Napi::Env env, const char* name, std::function<double()> compute) {
  auto out = std::make_shared<double>(0);
  return Task::Run(env, name, [compute = std::move(compute), out] { *out = compute(); },
                   [out](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *out); });
}

}  // namespace tangent_js
