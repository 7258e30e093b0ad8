// Tensor handles: zero-copy TypedArray -> tensor, read-back, to(device|dtype), dispose().
#include <cstring>

#include "addon_data.h"

namespace tangent_js {
namespace {

using tangent::ErrorKind;

// A JS ArrayBuffer kept alive by a tensor's storage; freed through the release queue.
struct Source {
  AddonData* data;
  napi_env env;
  napi_ref ref;
};

void ReleaseSource(void* ctx) {
  auto* s = static_cast<Source*>(ctx);
  if (s->data->closing) return;  // the environment is going away: nothing to release into
  if (std::this_thread::get_id() == s->data->main_thread) {
    napi_delete_reference(s->env, s->ref);
    delete s;
    return;
  }
  s->data->release_tsfn.NonBlockingCall(s, [](Napi::Env env, Napi::Function, Source* src) {
    napi_delete_reference(env, src->ref);
    delete src;
  });
}

napi_typedarray_type ArrayTypeFor(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return napi_float32_array;
    case at::kDouble: return napi_float64_array;
    case at::kHalf:
    case at::kBFloat16: return napi_uint16_array;
    case at::kLong: return napi_bigint64_array;
    case at::kInt: return napi_int32_array;
    case at::kShort: return napi_int16_array;
    case at::kChar: return napi_int8_array;
    case at::kByte:
    case at::kBool: return napi_uint8_array;
    default:
      tangent::fail(ErrorKind::DType, "dtype ", c10::toString(t), " has no TypedArray form");
  }
}

const char* ArrayTypeName(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    case napi_bigint64_array: return "BigInt64Array";
    case napi_biguint64_array: return "BigUint64Array";
  }
  return "TypedArray";
}

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "NativeTensor",
        {InstanceAccessor<&TensorWrap::Shape>("shape"),
         InstanceAccessor<&TensorWrap::DType>("dtype"),
         InstanceAccessor<&TensorWrap::DeviceName>("device"),
         InstanceAccessor<&TensorWrap::Disposed>("disposed"),
         InstanceAccessor<&TensorWrap::NBytes>("nbytes"),
         InstanceMethod<&TensorWrap::ReadData>("data"),
         InstanceMethod<&TensorWrap::Clone>("clone"),
         InstanceMethod<&TensorWrap::To>("to"),
         InstanceMethod<&TensorWrap::Dispose>("dispose")});
  }

  // new NativeTensor(typedArray, shape: number[], dtype) — zero-copy over the array's memory;
  // new NativeTensor(External<at::Tensor>, owned: boolean) — internal.
  explicit TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {
    auto env = info.Env();
    if (info[0].IsExternal()) {
      tensor_ = *info[0].As<Napi::External<at::Tensor>>().Data();
      if (info[1].ToBoolean() && tensor_.is_cpu()) Account(env, tensor_.storage().nbytes());
      return;
    }
    Guard(env, [&] { FromTypedArray(info); });
  }

  ~TensorWrap() override { Release(); }

  const at::Tensor& tensor(Napi::Env env, const std::string& what) const {
    if (!tensor_.defined())
      throw MakeError(env, "DisposedError", what + " has been disposed");
    return tensor_;
  }

 private:
  void FromTypedArray(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    if (!info[0].IsTypedArray())
      tangent::fail(ErrorKind::Argument, "Tensor data must be a TypedArray");
    auto arr = info[0].As<Napi::TypedArray>();
    const auto dtype = ParseDType(info[2].As<Napi::String>());
    const auto want = ArrayTypeFor(dtype);
    const auto got = arr.TypedArrayType();
    const bool ok = got == want || (want == napi_uint8_array && got == napi_uint8_clamped_array);
    tangent::check(ok, ErrorKind::DType, "dtype ", DTypeName(dtype), " needs a ", ArrayTypeName(want),
                   ", got a ", ArrayTypeName(got));
    auto shape_arr = info[1].As<Napi::Array>();
    std::vector<int64_t> shape(shape_arr.Length());
    int64_t numel = 1;
    for (uint32_t i = 0; i < shape.size(); ++i) {
      shape[i] = shape_arr.Get(i).As<Napi::Number>().Int64Value();
      tangent::check(shape[i] >= 0, ErrorKind::Shape, "shape ", tangent::shape_str(shape),
                     " has a negative size");
      numel *= shape[i];
    }
    tangent::check(numel == static_cast<int64_t>(arr.ElementLength()), ErrorKind::Shape, "shape ",
                   tangent::shape_str(shape), " holds ", numel, " elements, the ", ArrayTypeName(got),
                   " has ", arr.ElementLength());
    auto buffer = arr.ArrayBuffer();
    void* ptr = static_cast<uint8_t*>(buffer.Data()) + arr.ByteOffset();
    auto* data = &tangent_js::Data(env);
    auto* src = new Source{data, env, nullptr};
    napi_create_reference(env, buffer, 1, &src->ref);
    tensor_ = at::from_blob(ptr, shape, [src](void*) { ReleaseSource(src); },
                            at::TensorOptions().dtype(dtype));
    source_ptr_ = ptr;
    source_ = Napi::Persistent(arr.As<Napi::Object>());
  }

  void Account(Napi::Env env, int64_t bytes) {
    accounted_ += bytes;
    Napi::MemoryManagement::AdjustExternalMemory(env, bytes);
  }

  void Release() {
    if (accounted_ && !tangent_js::Data(Env()).closing) Napi::MemoryManagement::AdjustExternalMemory(Env(), -accounted_);
    accounted_ = 0;
    tensor_ = at::Tensor();
    source_.Reset();
    source_ptr_ = nullptr;
  }

  Napi::Value Shape(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    const auto& t = tensor(env, "tensor");
    auto arr = Napi::Array::New(env, t.dim());
    for (int64_t i = 0; i < t.dim(); ++i) arr.Set(static_cast<uint32_t>(i), static_cast<double>(t.size(i)));
    return arr;
  }
  Napi::Value DType(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), DTypeName(tensor(info.Env(), "tensor").scalar_type()));
  }
  Napi::Value DeviceName(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), tensor(info.Env(), "tensor").device().str());
  }
  Napi::Value Disposed(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), !tensor_.defined());
  }
  Napi::Value NBytes(const Napi::CallbackInfo& info) {
    const auto& t = tensor(info.Env(), "tensor");
    return Napi::Number::New(info.Env(), static_cast<double>(t.numel() * t.element_size()));
  }

  // A TypedArray of the tensor's values: the source array itself for an untouched zero-copy
  // tensor, otherwise a fresh copy (CPU tensors only).
  Napi::Value ReadData(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    const auto& t = tensor(env, "tensor");
    return Guard(env, [&]() -> Napi::Value {
      tangent::check(t.is_cpu(), ErrorKind::Device, "tensor is on ", t.device().str(),
                     "; move it to the CPU first (await tensor.to('cpu'))");
      if (source_ptr_ && t.data_ptr() == source_ptr_ && t.is_contiguous() &&
          static_cast<size_t>(t.numel()) == source_.Value().As<Napi::TypedArray>().ElementLength())
        return source_.Value();
      const auto type = ArrayTypeFor(t.scalar_type());
      const size_t n = t.numel();
      const size_t bytes = n * t.element_size();
      auto buf = Napi::ArrayBuffer::New(env, bytes);
      if (bytes) std::memcpy(buf.Data(), t.contiguous().data_ptr(), bytes);
      napi_value arr;
      NAPI_THROW_IF_FAILED(env, napi_create_typedarray(env, type, n, buf, 0, &arr), Napi::Value());
      return Napi::Value(env, arr);
    });
  }

  Napi::Value Clone(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    const auto& t = tensor(env, "tensor");
    return Guard(env, [&] { return WrapTensor(env, t.clone(at::MemoryFormat::Contiguous)); });
  }

  // to(device: string | null, dtype: string | null) -> Promise<NativeTensor>
  Napi::Value To(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    at::Tensor t = tensor(env, "tensor");
    return Guard(env, [&]() -> Napi::Value {
      const at::Device dev = info[0].IsString() ? ParseDevice(info[0].As<Napi::String>()) : t.device();
      const at::ScalarType dt = info[1].IsString() ? ParseDType(info[1].As<Napi::String>()) : t.scalar_type();
      auto out = std::make_shared<at::Tensor>();
      return Task::Run(
          env, "tangent.to", [t, dev, dt, out] { *out = t.to(dev, dt); },
          [out, t](Napi::Env env) -> Napi::Value {
            return WrapTensor(env, *out, !out->is_same(t) && !out->is_alias_of(t));
          });
    });
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

  at::Tensor tensor_;
  Napi::ObjectReference source_;
  void* source_ptr_ = nullptr;
  int64_t accounted_ = 0;
};

}  // namespace

Napi::Object InitTensor(Napi::Env env, Napi::Object exports) {
  auto& data = Data(env);
  auto ctor = TensorWrap::Define(env);
  data.tensor_ctor = Napi::Persistent(ctor);
  data.release_tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}),
                                                    "tangent.release", 0, 1);
  data.release_tsfn.Unref(env);
  napi_add_env_cleanup_hook(env, [](void* arg) { static_cast<AddonData*>(arg)->closing = true; }, &data);
  exports.Set("Tensor", ctor);
  return exports;
}

Napi::Object WrapTensor(Napi::Env env, at::Tensor t, bool owned) {
  auto ext = Napi::External<at::Tensor>::New(env, &t);
  return Data(env).tensor_ctor.New({ext, Napi::Boolean::New(env, owned)});
}

at::Tensor UnwrapTensor(Napi::Env env, const Napi::Value& v, const std::string& what) {
  auto& ctor = Data(env).tensor_ctor;
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(ctor.Value()))
    throw MakeError(env, "ArgumentError", what + " must be a Tensor");
  return TensorWrap::Unwrap(v.As<Napi::Object>())->tensor(env, what);
}

tangent::NamedTensors UnwrapNamed(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsObject()) throw MakeError(env, "ArgumentError", what + " must be an object of name -> Tensor");
  auto obj = v.As<Napi::Object>();
  auto names = obj.GetPropertyNames();
  tangent::NamedTensors out;
  out.reserve(names.Length());
  for (uint32_t i = 0; i < names.Length(); ++i) {
    std::string k = names.Get(i).As<Napi::String>();
    out.emplace_back(k, UnwrapTensor(env, obj.Get(k), what + " '" + k + "'"));
  }
  return out;
}

Napi::Object WrapNamed(Napi::Env env, const tangent::NamedTensors& named) {
  auto o = Napi::Object::New(env);
  for (const auto& kv : named) o.Set(kv.first, WrapTensor(env, kv.second));
  return o;
}

}  // namespace tangent_js
