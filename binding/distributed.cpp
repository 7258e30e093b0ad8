// Process groups (native/distributed.h) as a JS handle: init (rendezvous), allReduce, broadcast,
// barrier and close, each an AsyncWorker settling a Promise. Failures reject with a
// DistributedError (the message names the rank that stopped and the timeout).
#include "addon_data.h"
#include "distributed.h"

namespace tangent_js {
namespace {

// Like Task (binding/addon.cpp), with tangent::DistributedError mapped to "DistributedError".
class DistTask : public Napi::AsyncWorker {
 public:
  using ExecuteFn = std::function<void()>;
  using ResolveFn = std::function<Napi::Value(Napi::Env)>;
  static Napi::Promise Run(Napi::Env env, const char* name, ExecuteFn execute, ResolveFn resolve) {
    auto* t = new DistTask(env, name, std::move(execute), std::move(resolve));
    auto p = t->deferred_.Promise();
    t->Queue();
    return p;
  }

 private:
  DistTask(Napi::Env env, const char* name, ExecuteFn execute, ResolveFn resolve)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)),
        execute_(std::move(execute)), resolve_(std::move(resolve)) {}

  void Execute() override {
    tangent::keep_calling_thread_serial();  // bucket packing stays on this thread (compute_thread.h)
    try {
      execute_();
    } catch (const tangent::DistributedError& e) {
      kind_ = "DistributedError";
      message_ = e.what();
    } catch (const tangent::Error& e) {
      kind_ = tangent::error_kind_name(e.kind);
      message_ = e.what();
    } catch (const c10::Error& e) {
      kind_ = "DistributedError";
      message_ = e.what_without_backtrace();
    } catch (const std::exception& e) {
      kind_ = "DistributedError";
      message_ = e.what();
    }
    if (!kind_.empty()) SetError(message_);
  }
  void OnOK() override {
    auto env = Env();
    Napi::HandleScope scope(env);
    try {
      deferred_.Resolve(resolve_ ? resolve_(env) : env.Undefined());
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error&) override {
    auto env = Env();
    Napi::HandleScope scope(env);
    deferred_.Reject(MakeError(env, kind_, message_).Value());
  }

  Napi::Promise::Deferred deferred_;
  ExecuteFn execute_;
  ResolveFn resolve_;
  std::string kind_, message_;
};

std::string StringOr(const Napi::Object& o, const char* key, const std::string& dflt) {
  auto v = o.Get(key);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : dflt;
}

tangent::ReduceKind ParseReduce(Napi::Env env, const Napi::Value& v) {
  const std::string op = v.IsString() ? v.As<Napi::String>().Utf8Value() : "sum";
  if (op == "sum") return tangent::ReduceKind::Sum;
  if (op == "mean") return tangent::ReduceKind::Mean;
  if (op == "max") return tangent::ReduceKind::Max;
  if (op == "min") return tangent::ReduceKind::Min;
  throw MakeError(env, "ArgumentError", "unknown reduction '" + op + "' (expected sum, mean, max or min)");
}

class ProcessGroupWrap : public Napi::ObjectWrap<ProcessGroupWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeProcessGroup",
                       {InstanceAccessor<&ProcessGroupWrap::Rank>("rank"),
                        InstanceAccessor<&ProcessGroupWrap::WorldSize>("worldSize"),
                        InstanceAccessor<&ProcessGroupWrap::Port>("port"),
                        InstanceAccessor<&ProcessGroupWrap::Backend>("backend"),
                        InstanceAccessor<&ProcessGroupWrap::Closed>("closed"),
                        InstanceAccessor<&ProcessGroupWrap::Broken>("broken"),
                        InstanceMethod<&ProcessGroupWrap::Init>("init"),
                        InstanceMethod<&ProcessGroupWrap::AllReduce>("allReduce"),
                        InstanceMethod<&ProcessGroupWrap::Broadcast>("broadcast"),
                        InstanceMethod<&ProcessGroupWrap::Barrier>("barrier"),
                        InstanceMethod<&ProcessGroupWrap::Close>("close")});
  }
  explicit ProcessGroupWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProcessGroupWrap>(info) {}

 private:
  // The group, shared with the workers so that it outlives a collected handle mid-call.
  struct Slot {
    std::shared_ptr<tangent::ProcessGroup> pg;
    std::atomic<bool> initializing{false};
  };
  std::shared_ptr<Slot> slot_ = std::make_shared<Slot>();

  std::shared_ptr<tangent::ProcessGroup> Group(Napi::Env env, const char* what) {
    if (!slot_->pg) throw MakeError(env, "StateError", std::string(what) + " before the process group was initialized");
    return slot_->pg;
  }

  Napi::Value Rank(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), slot_->pg ? slot_->pg->rank() : -1); }
  Napi::Value WorldSize(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), slot_->pg ? slot_->pg->world_size() : 0); }
  Napi::Value Port(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), slot_->pg ? slot_->pg->port() : 0); }
  Napi::Value Backend(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), slot_->pg ? slot_->pg->backend() : "");
  }
  Napi::Value Closed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !slot_->pg || slot_->pg->closed()); }
  Napi::Value Broken(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), slot_->pg ? slot_->pg->broken() : "");
  }

  // init({masterAddr, port, worldSize, rank, timeoutMs, backend, interface, bindAddress, glooThreads})
  Napi::Value Init(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      if (slot_->pg || slot_->initializing) throw MakeError(env, "StateError", "process group already initialized");
      auto o = info[0].IsObject() ? info[0].As<Napi::Object>() : Napi::Object::New(env);
      tangent::ProcessGroupOptions po;
      po.master_addr = StringOr(o, "masterAddr", po.master_addr);
      po.port = static_cast<int>(NumberOr(o, "port", po.port));
      po.world_size = static_cast<int>(NumberOr(o, "worldSize", po.world_size));
      po.rank = static_cast<int>(NumberOr(o, "rank", po.rank));
      po.timeout = std::chrono::milliseconds(static_cast<int64_t>(NumberOr(o, "timeoutMs", static_cast<double>(po.timeout.count()))));
      po.backend = StringOr(o, "backend", po.backend);
      po.interface = StringOr(o, "interface", "");
      po.bind_address = StringOr(o, "bindAddress", "");
      po.gloo_threads = static_cast<int>(NumberOr(o, "glooThreads", po.gloo_threads));
      slot_->initializing = true;
      auto slot = slot_;
      return DistTask::Run(env, "tangent.processGroup.init",
                           [slot, po] {
                             try {
                               slot->pg = tangent::ProcessGroup::create(po);
                             } catch (...) {
                               slot->initializing = false;
                               throw;
                             }
                             slot->initializing = false;
                           },
                           [slot](Napi::Env env) -> Napi::Value {
                             auto r = Napi::Object::New(env);
                             r.Set("rank", slot->pg->rank());
                             r.Set("worldSize", slot->pg->world_size());
                             r.Set("port", slot->pg->port());
                             return r;
                           });
    });
  }

  // allReduce(tensors, op, bucketBytes, prescale)
  Napi::Value AllReduce(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      auto pg = Group(env, "allReduce");
      auto ts = TensorList(env, info[0], "tensor");
      auto op = ParseReduce(env, info[1]);
      const int64_t bucket = info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : (25 << 20);
      const double prescale = info[3].IsNumber() ? info[3].As<Napi::Number>().DoubleValue() : 1.0;
      return DistTask::Run(env, "tangent.processGroup.allReduce",
                           [pg, ts, op, bucket, prescale] { pg->all_reduce(ts, op, bucket, prescale); }, nullptr);
    });
  }

  // broadcast(tensors, root, bucketBytes)
  Napi::Value Broadcast(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      auto pg = Group(env, "broadcast");
      auto ts = TensorList(env, info[0], "tensor");
      const int root = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0;
      const int64_t bucket = info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : (25 << 20);
      return DistTask::Run(env, "tangent.processGroup.broadcast", [pg, ts, root, bucket] { pg->broadcast(ts, root, bucket); }, nullptr);
    });
  }

  Napi::Value Barrier(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      auto pg = Group(env, "barrier");
      return DistTask::Run(env, "tangent.processGroup.barrier", [pg] { pg->barrier(); }, nullptr);
    });
  }

  // close(abort): a barrier first unless `abort` or the group is broken; safe to call twice.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      auto pg = slot_->pg;
      const bool abort = info[0].IsBoolean() && info[0].As<Napi::Boolean>().Value();
      return DistTask::Run(env, "tangent.processGroup.close", [pg, abort] { if (pg) pg->close(abort); }, nullptr);
    });
  }
};

Napi::Value Backends(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto o = Napi::Object::New(env);
  o.Set("gloo", tangent::distributed_backend_available("gloo"));
  o.Set("nccl", tangent::distributed_backend_available("nccl"));
  return o;
}

}  // namespace

Napi::Object InitDistributed(Napi::Env env, Napi::Object exports) {
  exports.Set("ProcessGroup", ProcessGroupWrap::Define(env));
  exports.Set("distributedBackends", Napi::Function::New(env, Backends));
  return exports;
}

}  // namespace tangent_js
