// The thin Node-API layer over native/: conversions, typed errors and the async worker.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autodiff.h"

namespace tangent_js {

// Per-environment state: typed error constructors, the Tensor class, the release queue.
struct AddonData;
AddonData& Data(Napi::Env env);

// Throw (on the JS thread) a JS error of the class the TS layer registered for `kind`
// ("ShapeError", "DTypeError", ..., "TorchError"); falls back to a plain Error.
Napi::Error MakeError(Napi::Env env, const std::string& kind, const std::string& message);

// Runs `body`, converting tangent::Error / c10::Error / std::exception into typed JS errors.
template <typename F>
auto Guard(Napi::Env env, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const tangent::Error& e) {
    throw MakeError(env, tangent::error_kind_name(e.kind), e.what());
  } catch (const c10::Error& e) {
    throw MakeError(env, "TorchError", e.what_without_backtrace());
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw MakeError(env, "TorchError", e.what());
  }
}

// An AsyncWorker that runs `execute` on the libuv pool and settles a Promise with `resolve`'s
// value (built on the JS thread), or rejects it with a typed error.
class Task : public Napi::AsyncWorker {
 public:
  using ExecuteFn = std::function<void()>;
  using ResolveFn = std::function<Napi::Value(Napi::Env)>;
  static Napi::Promise Run(Napi::Env env, const char* name, ExecuteFn execute, ResolveFn resolve);

 protected:
  Task(Napi::Env env, const char* name, ExecuteFn execute, ResolveFn resolve);
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;

 private:
  Napi::Promise::Deferred deferred_;
  ExecuteFn execute_;
  ResolveFn resolve_;
  std::string kind_, message_;
};

// dtype / device parsing with typed errors.
at::ScalarType ParseDType(const std::string& name);
std::string DTypeName(at::ScalarType t);
at::Device ParseDevice(const std::string& name);

// Tensor handles.
Napi::Object InitTensor(Napi::Env env, Napi::Object exports);
// Wrap a tensor in a new JS handle; `owned` reports its bytes to V8 as external memory.
Napi::Object WrapTensor(Napi::Env env, at::Tensor t, bool owned = true);
// The tensor inside a JS Tensor handle; throws DisposedError / TypeError naming `what`.
at::Tensor UnwrapTensor(Napi::Env env, const Napi::Value& v, const std::string& what);
// {name: Tensor} -> NamedTensors.
tangent::NamedTensors UnwrapNamed(Napi::Env env, const Napi::Value& v, const std::string& what);
Napi::Object WrapNamed(Napi::Env env, const tangent::NamedTensors& named);

// Small argument and result helpers shared by the binding files (binding/common.cpp).
// A JS array of Tensor handles -> tensors; a TypeError naming `what` unless `v` is an array, and
// element errors name `what i`.
std::vector<at::Tensor> TensorList(Napi::Env env, const Napi::Value& v, const std::string& what);
// o[key] when it is a number, else `dflt`.
double NumberOr(const Napi::Object& o, const char* key, double dflt);
// A Task whose `compute` runs on the libuv pool; the Promise resolves with the tensor it returns
// (or the number it returns).
Napi::Promise TensorTask(Napi::Env env, const char* name, std::function<at::Tensor()> compute);
Napi::Promise NumberTask(Napi::Env env, const char* name, std::function<double()> compute);

Napi::Object InitModel(Napi::Env env, Napi::Object exports);
tangent::ModelPtr UnwrapModel(Napi::Env env, const Napi::Value& v, const std::string& what);  // binding/model.cpp
Napi::Object InitAnalysis(Napi::Env env, Napi::Object exports);
Napi::Object InitOps(Napi::Env env, Napi::Object exports);
Napi::Object InitOptim(Napi::Env env, Napi::Object exports);

}  // namespace tangent_js
