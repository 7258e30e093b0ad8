#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <map>
#include <thread>

#include "addon_data.h"
#include "compute_thread.h"

#ifndef TANGENT_TORCH_VERSION
#include <torch/version.h>
#define TANGENT_TORCH_VERSION TORCH_VERSION
#endif

namespace tangent_js {

// Process groups over c10d (binding/distributed.cpp).
Napi::Object InitDistributed(Napi::Env env, Napi::Object exports);
namespace {


// setErrorClasses({ShapeError, DTypeError, ...}): the TS layer's typed error constructors.
Napi::Value SetErrorClasses(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "setErrorClasses expects an object");
  auto obj = info[0].As<Napi::Object>();
  auto names = obj.GetPropertyNames();
  auto& classes = Data(env).error_ctors;
  for (uint32_t i = 0; i < names.Length(); ++i) {
    std::string k = names.Get(i).As<Napi::String>();
    auto v = obj.Get(k);
    if (v.IsFunction()) classes[k] = Napi::Persistent(v.As<Napi::Function>());
  }
  return env.Undefined();
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  Guard(env, [&] {
    // Same bound as lib/runtime.ts (4 per CPU): thousands of threads hang libtorch's pool.
    const int64_t n = info[0].As<Napi::Number>().Int64Value();
    const int64_t max = std::max<int64_t>(4, 4 * static_cast<int64_t>(std::thread::hardware_concurrency()));
    tangent::check(n >= 1 && n <= max, tangent::ErrorKind::Argument, "threads must be an integer from 1 to ", max,
                   " (4 per CPU), got ", n);
    tangent::set_num_threads(static_cast<int>(n));
    tangent::keep_calling_thread_serial();  // at::set_num_threads set this (the JS) thread's too
  });
  return env.Undefined();
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), tangent::get_num_threads());
}

Napi::Value SetJvpMethod(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  Guard(env, [&] {
    const std::string m = info[0].As<Napi::String>();
    tangent::check(m == "auto" || m == "forward-ad", tangent::ErrorKind::Argument,
                   "jvp method must be 'auto' or 'forward-ad', got '", m, "'");
    tangent::set_jvp_method(m == "auto" ? tangent::JvpMethod::Auto : tangent::JvpMethod::ForwardAD);
  });
  return env.Undefined();
}

const char* JvpMethodName() { return tangent::get_jvp_method() == tangent::JvpMethod::Auto ? "auto" : "forward-ad"; }

Napi::Value GetJvpMethod(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), JvpMethodName()); }

// OpenBLAS's own account of itself, when it is the BLAS in this process (else null).
Napi::Value BlasInfo(Napi::Env env) {
  using Str = char* (*)();
  auto core = reinterpret_cast<Str>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  auto config = reinterpret_cast<Str>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  if (!core) return env.Null();
  auto o = Napi::Object::New(env);
  o.Set("library", "OpenBLAS");
  o.Set("core", core());
  if (config) o.Set("config", config());
  return o;
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto o = Napi::Object::New(env);
  o.Set("blas", BlasInfo(env));
  o.Set("jvpMethod", JvpMethodName());
  o.Set("torchVersion", TANGENT_TORCH_VERSION);
  o.Set("cudaAvailable", at::hasCUDA());
  o.Set("cudaDeviceCount", at::hasCUDA() ? static_cast<double>(at::detail::getCUDAHooks().getNumGPUs()) : 0.0);
  o.Set("parallelInfo", at::get_parallel_info());
  return o;
}

}  // namespace

AddonData& Data(Napi::Env env) {
  auto* data = env.GetInstanceData<AddonData>();
  if (!data) {
    data = new AddonData();
    env.SetInstanceData(data);
  }
  return *data;
}

Napi::Error MakeError(Napi::Env env, const std::string& kind, const std::string& message) {
  auto& classes = Data(env).error_ctors;
  auto it = classes.find(kind);
  if (it != classes.end()) {
    auto obj = it->second.New({Napi::String::New(env, message)});
    return Napi::Error(env, obj);
  }
  auto e = Napi::Error::New(env, message);
  e.Set("name", kind);
  return e;
}

Task::Task(Napi::Env env, const char* name, ExecuteFn execute, ResolveFn resolve)
    : Napi::AsyncWorker(env, name),
      deferred_(Napi::Promise::Deferred::New(env)),
      execute_(std::move(execute)),
      resolve_(std::move(resolve)) {}

Napi::Promise Task::Run(Napi::Env env, const char* name, ExecuteFn execute, ResolveFn resolve) {
  auto* t = new Task(env, name, std::move(execute), std::move(resolve));
  auto promise = t->deferred_.Promise();
  t->Queue();
  return promise;
}

void Task::Execute() {
  try {
    // On the one compute thread (binding/compute_thread.h), with the process-wide thread setting.
    RunOnComputeThread([this] {
      at::init_num_threads();
      execute_();
    });
  } catch (const tangent::Error& e) {
    kind_ = tangent::error_kind_name(e.kind);
    message_ = e.what();
  } catch (const c10::Error& e) {
    kind_ = "TorchError";
    message_ = e.what_without_backtrace();
  } catch (const std::exception& e) {
    kind_ = "TorchError";
    message_ = e.what();
  }
  if (!kind_.empty()) SetError(message_);
}

void Task::OnOK() {
  auto env = Env();
  Napi::HandleScope scope(env);
  try {
    deferred_.Resolve(Guard(env, [&] { return resolve_(env); }));
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  }
  execute_ = nullptr;
  resolve_ = nullptr;
}

void Task::OnError(const Napi::Error&) {
  auto env = Env();
  Napi::HandleScope scope(env);
  deferred_.Reject(MakeError(env, kind_, message_).Value());
  execute_ = nullptr;
  resolve_ = nullptr;
}

at::ScalarType ParseDType(const std::string& n) {
  static const std::map<std::string, at::ScalarType> table{
      {"float32", at::kFloat}, {"float64", at::kDouble}, {"float16", at::kHalf},
      {"bfloat16", at::kBFloat16}, {"int64", at::kLong}, {"int32", at::kInt},
      {"int16", at::kShort}, {"int8", at::kChar}, {"uint8", at::kByte}, {"bool", at::kBool}};
  auto it = table.find(n);
  if (it == table.end())
    tangent::fail(tangent::ErrorKind::DType, "unknown dtype '", n,
                  "' (expected float32, float64, float16, bfloat16, int64, int32, int16, int8, uint8 or bool)");
  return it->second;
}

std::string DTypeName(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
}

at::Device ParseDevice(const std::string& name) {
  c10::optional<at::Device> dev;
  try {
    dev = at::Device(name);
  } catch (const c10::Error&) {
    tangent::fail(tangent::ErrorKind::Device, "unknown device '", name, "' (expected cpu, cuda or cuda:N)");
  }
  if (dev->is_cpu()) return *dev;
  tangent::check(dev->is_cuda(), tangent::ErrorKind::Device, "unsupported device '", name,
                 "' (expected cpu, cuda or cuda:N)");
  tangent::check(at::hasCUDA(), tangent::ErrorKind::Device, "device '", name,
                 "' requested, but this build's libtorch has no CUDA support or no GPU is visible; "
                 "rebuild against a CUDA libtorch (Torch_DIR) on a machine with a GPU");
  const int64_t n = at::detail::getCUDAHooks().getNumGPUs();
  tangent::check(!dev->has_index() || dev->index() < n, tangent::ErrorKind::Device, "device '", name,
                 "' requested, but only ", n, " CUDA device(s) are visible");
  return *dev;
}

}  // namespace tangent_js

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  using namespace tangent_js;
  // This environment's JS thread only dispatches heavy work to the compute thread: keep it from
  // owning an OpenMP team (binding/compute_thread.h).
  tangent::keep_calling_thread_serial();
  exports.Set("setErrorClasses", Napi::Function::New(env, SetErrorClasses));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("getNumThreads", Napi::Function::New(env, GetNumThreads));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setJvpMethod", Napi::Function::New(env, SetJvpMethod));
  exports.Set("getJvpMethod", Napi::Function::New(env, GetJvpMethod));
  InitTensor(env, exports);
  InitModel(env, exports);
  InitOps(env, exports);
  InitAnalysis(env, exports);
  InitOptim(env, exports);
  InitDistributed(env, exports);
  return exports;
}

NODE_API_MODULE(tangent, Init)
