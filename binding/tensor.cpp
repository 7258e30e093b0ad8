// Tensor handles: TypedArray -> tensor (zero-copy over addon-owned memory, else a copy), read-back,
// to(device|dtype), dispose().
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "addon_data.h"

namespace tangent_js {
namespace {

using tangent::ErrorKind;

// ---------------------------------------------------------------------------
// Memory a tensor may share with JS (docs/security.md, "Zero-copy: the rule").
//
// A tensor never views memory that JS owns: V8 may free or move an ArrayBuffer's memory while
// native code still reads it (transfer, detach, ArrayBuffer.prototype.transfer, resize of a
// resizable buffer, another thread's SharedArrayBuffer), and Node-API can keep the JS object
// alive but not its memory. Memory the addon owns is handed to JS instead, as an external
// ArrayBuffer over a reference-counted Block: the ArrayBuffer holds one reference (dropped by its
// finalizer, or when V8 frees a transferred copy of it), every tensor over it holds another (dropped
// by the tensor's deleter, on any thread). Whatever JS does with the ArrayBuffer, the bytes stay
// alive and in place while a tensor uses them. A TypedArray over any other memory is copied.
struct Block {
  void* ptr;
  size_t size;
  std::atomic<int64_t> refs{1};
};

// Process-wide and JS-free (raw pointers only): blocks may be shared by tensors of any thread.
std::mutex blocks_mutex;
std::map<uintptr_t, Block*>& Blocks() {
  static auto* blocks = new std::map<uintptr_t, Block*>();  // never destroyed: deleters may run at exit
  return *blocks;
}

void UnrefBlock(Block* b) {
  if (b->refs.fetch_sub(1) != 1) return;
  {
    std::lock_guard<std::mutex> lock(blocks_mutex);
    Blocks().erase(reinterpret_cast<uintptr_t>(b->ptr));
  }
  std::free(b->ptr);
  delete b;
}

// A new reference to the live block holding [p, p + n), or nullptr.
Block* RefBlock(const void* p, size_t n) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(blocks_mutex);
  auto& blocks = Blocks();
  auto it = blocks.upper_bound(addr);
  if (it == blocks.begin()) return nullptr;
  --it;
  Block* b = it->second;
  if (addr + n > it->first + b->size) return nullptr;
  int64_t r = b->refs.load();
  while (r > 0 && !b->refs.compare_exchange_weak(r, r + 1)) {
  }
  return r > 0 ? b : nullptr;
}

// allocate(bytes) -> ArrayBuffer over addon-owned, zero-filled, 64-byte aligned memory; undefined
// where this Node forbids external buffers (then JS allocates, and tensors copy).
Napi::Value Allocate(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const double want = info[0].As<Napi::Number>().DoubleValue();
  if (!(want >= 0) || want > 9007199254740991.0) throw MakeError(env, "ArgumentError", "allocate: bytes must be a non-negative integer");
  const size_t n = static_cast<size_t>(want);
  const size_t padded = ((n == 0 ? 1 : n) + 63) / 64 * 64;
  void* ptr = std::aligned_alloc(64, padded);
  if (ptr == nullptr) throw MakeError(env, "TorchError", "allocate: out of memory (" + std::to_string(n) + " bytes)");
  std::memset(ptr, 0, padded);
  auto* b = new Block{ptr, n};
  {
    std::lock_guard<std::mutex> lock(blocks_mutex);
    Blocks()[reinterpret_cast<uintptr_t>(ptr)] = b;
  }
  napi_value ab;
  napi_status st = napi_create_external_arraybuffer(
      env, ptr, n, [](napi_env, void*, void* hint) { UnrefBlock(static_cast<Block*>(hint)); }, b, &ab);
  if (st != napi_ok) {
    UnrefBlock(b);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) {
      napi_value e;
      napi_get_and_clear_last_exception(env, &e);
    }
    return env.Undefined();
  }
  return Napi::Value(env, ab);
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

  // new NativeTensor(typedArray, shape: number[], dtype) — zero-copy over addon-owned memory
  // (allocate()), a copy of any other memory;
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
    // The rule (docs/security.md): zero-copy over addon-owned memory (a Block), a copy otherwise.
    napi_value ab;
    void* ptr = nullptr;
    size_t length = 0, byte_offset = 0;
    napi_typedarray_type type;
    NAPI_THROW_IF_FAILED_VOID(env, napi_get_typedarray_info(env, arr, &type, &length, &ptr, &ab, &byte_offset));
    bool is_ab = false, detached = false;
    NAPI_THROW_IF_FAILED_VOID(env, napi_is_arraybuffer(env, ab, &is_ab));  // false: a SharedArrayBuffer
    if (is_ab) NAPI_THROW_IF_FAILED_VOID(env, napi_is_detached_arraybuffer(env, ab, &detached));
    tangent::check(!detached, ErrorKind::Argument, "Tensor data: the array's ArrayBuffer is detached (transferred); nothing to read");
    const auto options = at::TensorOptions().dtype(dtype);
    const size_t bytes = static_cast<size_t>(numel) * at::elementSize(dtype);
    Block* block = (is_ab && bytes > 0 && ptr != nullptr) ? RefBlock(ptr, bytes) : nullptr;
    if (block != nullptr) {
      tensor_ = at::from_blob(ptr, shape, [block](void*) { UnrefBlock(block); }, options);
      source_ptr_ = ptr;
      source_ = Napi::Persistent(arr.As<Napi::Object>());
      return;
    }
    tensor_ = at::empty(shape, options);
    if (bytes > 0) std::memcpy(tensor_.data_ptr(), ptr, bytes);
    Account(env, static_cast<int64_t>(bytes));
  }

  void Account(Napi::Env env, int64_t bytes) {
    accounted_ += bytes;
    Napi::MemoryManagement::AdjustExternalMemory(env, bytes);
  }

  void Release() {
    if (accounted_) Napi::MemoryManagement::AdjustExternalMemory(Env(), -accounted_);
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

  // Whether the source array still views the tensor's memory (not detached by a transfer).
  bool SourceIntact() const {
    if (!source_ptr_ || source_.IsEmpty()) return false;
    napi_value ab;
    void* ptr = nullptr;
    size_t length = 0, byte_offset = 0;
    napi_typedarray_type type;
    if (napi_get_typedarray_info(Env(), source_.Value(), &type, &length, &ptr, &ab, &byte_offset) != napi_ok) return false;
    bool detached = true;
    if (napi_is_detached_arraybuffer(Env(), ab, &detached) != napi_ok || detached) return false;
    return ptr == source_ptr_;
  }

  // A TypedArray of the tensor's values: the source array itself for an untouched zero-copy
  // tensor, otherwise a fresh copy (CPU tensors only).
  Napi::Value ReadData(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    const auto& t = tensor(env, "tensor");
    return Guard(env, [&]() -> Napi::Value {
      tangent::check(t.is_cpu(), ErrorKind::Device, "tensor is on ", t.device().str(),
                     "; move it to the CPU first (await tensor.to('cpu'))");
      if (SourceIntact() && t.data_ptr() == source_ptr_ && t.is_contiguous() &&
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
  auto ctor = TensorWrap::Define(env);
  Data(env).tensor_ctor = Napi::Persistent(ctor);
  exports.Set("Tensor", ctor);
  exports.Set("allocate", Napi::Function::New(env, Allocate));
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
