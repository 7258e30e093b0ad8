// Model handles: built-in architectures and TorchScript modules; forward, JVP, linearized
// forward, VJP and training-step primitives, each an AsyncWorker returning a Promise.
#include "addon_data.h"

namespace tangent_js {
namespace {

using tangent::ErrorKind;

std::vector<int64_t> IntList(const Napi::Object& cfg, const char* key, std::vector<int64_t> dflt) {
  if (!cfg.Has(key) || cfg.Get(key).IsUndefined()) return dflt;
  auto arr = cfg.Get(key).As<Napi::Array>();
  std::vector<int64_t> out(arr.Length());
  for (uint32_t i = 0; i < out.size(); ++i) out[i] = arr.Get(i).As<Napi::Number>().Int64Value();
  return out;
}

int64_t Int(const Napi::Object& cfg, const char* key, int64_t dflt) {
  if (!cfg.Has(key) || cfg.Get(key).IsUndefined()) return dflt;
  return cfg.Get(key).As<Napi::Number>().Int64Value();
}

Napi::Array WrapPairs(Napi::Env env, const tangent::NamedTensors& named, bool owned) {
  auto arr = Napi::Array::New(env, named.size());
  for (uint32_t i = 0; i < named.size(); ++i) {
    auto pair = Napi::Array::New(env, 2);
    pair.Set(0u, named[i].first);
    pair.Set(1u, WrapTensor(env, named[i].second, owned));
    arr.Set(i, pair);
  }
  return arr;
}

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceAccessor<&ModelWrap::Kind>("kind"),
                        InstanceAccessor<&ModelWrap::Disposed>("disposed"),
                        InstanceMethod<&ModelWrap::Parameters>("parameters"),
                        InstanceMethod<&ModelWrap::Buffers>("buffers"),
                        InstanceMethod<&ModelWrap::Forward>("forward"),
                        InstanceMethod<&ModelWrap::Jvp>("jvp"),
                        InstanceMethod<&ModelWrap::JvpDoubleBackward>("jvpDoubleBackward"),
                        InstanceMethod<&ModelWrap::Vjp>("vjp"),
                        InstanceMethod<&ModelWrap::LinearizedForward>("linearizedForward"),
                        InstanceMethod<&ModelWrap::LossAndGrad>("lossAndGrad"),
                        InstanceMethod<&ModelWrap::Evaluate>("evaluate"),
                        InstanceMethod<&ModelWrap::WithState>("withState"),
                        InstanceMethod<&ModelWrap::Dispose>("dispose")});
  }

  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
    if (info[0].IsExternal()) model_ = *info[0].As<Napi::External<tangent::ModelPtr>>().Data();
  }

  static Napi::Object Wrap(Napi::Env env, tangent::ModelPtr m) {
    // The class of this environment (each worker thread has its own; no static JS handle).
    return Data(env).model_ctor.New({Napi::External<tangent::ModelPtr>::New(env, &m)});
  }
  // The native model behind a JS NativeModel handle (for other binding files, via UnwrapModel).
  tangent::ModelPtr Handle(Napi::Env env) const { return model(env); }

 private:
  tangent::ModelPtr model(Napi::Env env) const {
    if (!model_) throw MakeError(env, "DisposedError", "model has been disposed");
    return model_;
  }

  // A resolved state from a {name: Tensor} object, or the model's own when null/undefined.
  static std::vector<at::Tensor> State(Napi::Env env, const tangent::Model& m, const Napi::Value& v,
                                       const std::string& what) {
    if (v.IsNull() || v.IsUndefined()) return m.own_state();
    return m.resolve(UnwrapNamed(env, v, what));
  }

  // The input: one tensor, or an array of tensors (x first) for a model whose forward takes
  // several; the extra inputs ride along in a with_inputs() view of the model.
  static std::pair<tangent::ModelPtr, at::Tensor> Inputs(Napi::Env env, tangent::ModelPtr m, const Napi::Value& v) {
    if (!v.IsArray()) return {m, UnwrapTensor(env, v, "input")};
    auto list = TensorList(env, v, "input");
    tangent::check(!list.empty(), ErrorKind::Argument, "input array is empty");
    at::Tensor x = list.front();
    list.erase(list.begin());
    return {tangent::with_inputs(std::move(m), std::move(list)), x};
  }

  // A tangent aligned with the parameters; names not given are zero.
  static std::vector<at::Tensor> Tangent(Napi::Env env, const tangent::Model& m, const Napi::Value& v) {
    std::vector<at::Tensor> out(m.num_parameters());
    for (auto& kv : UnwrapNamed(env, v, "tangent")) {
      const int64_t i = m.parameter_index(kv.first);
      tangent::check(i >= 0, ErrorKind::Parameter, "tangent names unknown parameter '", kv.first, "'");
      out[i] = kv.second;
    }
    return out;
  }

  // (x, params0?, tangent): the arguments of both JVPs.
  struct JvpArgs {
    tangent::ModelPtr m;
    at::Tensor x;
    std::vector<at::Tensor> state0, tangent;
  };
  JvpArgs ParseJvp(const Napi::CallbackInfo& info) const {
    auto env = info.Env();
    auto in = Inputs(env, model(env), info[0]);
    auto m = in.first;
    at::Tensor x = in.second;
    return {m, x, State(env, *m, info[1], "params0"), Tangent(env, *m, info[2])};
  }

  static tangent::Head HeadOf(Napi::Env env, const Napi::Value& v) {
    tangent::Head h;
    if (v.IsNull() || v.IsUndefined()) return h;
    auto o = v.As<Napi::Object>();
    h.weight = UnwrapTensor(env, o.Get("weight"), "head.weight");
    if (o.Has("bias") && !o.Get("bias").IsUndefined() && !o.Get("bias").IsNull())
      h.bias = UnwrapTensor(env, o.Get("bias"), "head.bias");
    h.normalize = o.Has("normalize") && o.Get("normalize").ToBoolean();
    return h;
  }

  static tangent::Mode ModeOf(const Napi::Value& v) {
    const std::string s = v.As<Napi::String>();
    if (s == "standard") return tangent::Mode::Standard;
    tangent::check(s == "linear", ErrorKind::Argument, "mode must be 'standard' or 'linear', got '", s, "'");
    return tangent::Mode::Linear;
  }

  Napi::Value Kind(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), model(info.Env())->kind());
  }
  Napi::Value Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !model_); }
  Napi::Value Parameters(const Napi::CallbackInfo& info) {
    return WrapPairs(info.Env(), model(info.Env())->parameters(), false);
  }
  Napi::Value Buffers(const Napi::CallbackInfo& info) {
    return WrapPairs(info.Env(), model(info.Env())->buffers(), false);
  }
  // withState(params) -> NativeModel: the same architecture with `params` as its own θ0.
  Napi::Value WithState(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      return Wrap(env, tangent::with_state(model(env), UnwrapNamed(env, info[0], "params")));
    });
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model_.reset();
    return info.Env().Undefined();
  }

  // forward(x, params?) -> Promise<Tensor>
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      auto in = Inputs(env, model(env), info[0]);
      auto m = in.first;
      at::Tensor x = in.second;
      auto state = State(env, *m, info[1], "params");
      return TensorTask(env, "tangent.forward", [m, x, state] { return tangent::forward_eval(*m, x, state); });
    });
  }

  // jvp(x, params0?, tangent) -> Promise<{primal, tangent}>
  Napi::Value Jvp(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      auto a = ParseJvp(info);
      auto out = std::make_shared<tangent::JvpResult>();
      return Task::Run(env, "tangent.jvp", [a, out] { *out = tangent::jvp(*a.m, a.x, a.state0, a.tangent); },
                       [out](Napi::Env env) -> Napi::Value {
                         auto o = Napi::Object::New(env);
                         o.Set("primal", WrapTensor(env, out->primal));
                         o.Set("tangent", WrapTensor(env, out->tangent));
                         return o;
                       });
    });
  }

  Napi::Value JvpDoubleBackward(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      auto a = ParseJvp(info);
      return TensorTask(env, "tangent.jvpDoubleBackward",
                        [a] { return tangent::jvp_double_backward(*a.m, a.x, a.state0, a.tangent); });
    });
  }

  // vjp(x, params?, cotangent) -> Promise<[name, Tensor][]>
  Napi::Value Vjp(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      auto in = Inputs(env, model(env), info[0]);
      auto m = in.first;
      at::Tensor x = in.second;
      auto state = State(env, *m, info[1], "params");
      at::Tensor g = UnwrapTensor(env, info[2], "cotangent");
      auto out = std::make_shared<tangent::NamedTensors>();
      return Task::Run(env, "tangent.vjp",
                       [m, x, state, g, out] {
                         auto grads = tangent::vjp(*m, x, state, g);
                         for (size_t i = 0; i < grads.size(); ++i)
                           out->emplace_back(m->parameters()[i].first, grads[i]);
                       },
                       [out](Napi::Env env) -> Napi::Value { return WrapPairs(env, *out, true); });
    });
  }

  // linearizedForward(x, params0?, params) -> Promise<Tensor>
  Napi::Value LinearizedForward(const Napi::CallbackInfo& info) {
    auto env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      auto in = Inputs(env, model(env), info[0]);
      auto m = in.first;
      at::Tensor x = in.second;
      auto state0 = State(env, *m, info[1], "params0");
      auto state = State(env, *m, info[2], "params");
      return TensorTask(env, "tangent.linearizedForward",
                        [m, x, state0, state] { return tangent::linearized_forward(*m, x, state0, state); });
    });
  }

  // lossAndGrad(mode, x, y, params?, params0?, head?) -> Promise<{loss, correct, grads}>
  Napi::Value LossAndGrad(const Napi::CallbackInfo& info) { return Step(info, true); }
  // evaluate(mode, x, y, params?, params0?, head?) -> Promise<{loss, correct}>
  Napi::Value Evaluate(const Napi::CallbackInfo& info) { return Step(info, false); }

  Napi::Value Step(const Napi::CallbackInfo& info, bool grads) {
    auto env = info.Env();
    return Guard(env, [&]() -> Napi::Value {
      const auto mode = ModeOf(info[0]);
      auto in = Inputs(env, model(env), info[1]);
      auto m = in.first;
      at::Tensor x = in.second;
      at::Tensor y = UnwrapTensor(env, info[2], "labels");
      auto state = State(env, *m, info[3], "params");
      auto state0 = State(env, *m, info[4], "params0");
      auto head = HeadOf(env, info[5]);
      auto out = std::make_shared<tangent::StepResult>();
      return Task::Run(
          env, grads ? "tangent.lossAndGrad" : "tangent.evaluate",
          [m, mode, x, y, state, state0, head, out, grads] {
            *out = grads ? tangent::loss_and_grad(*m, mode, x, y, state, state0, head)
                         : tangent::evaluate(*m, mode, x, y, state, state0, head);
          },
          [m, out, grads](Napi::Env env) -> Napi::Value {
            auto o = Napi::Object::New(env);
            o.Set("loss", out->loss);
            o.Set("correct", static_cast<double>(out->correct));
            if (grads) {
              tangent::NamedTensors named;
              for (size_t i = 0; i < out->grads.size(); ++i)
                named.emplace_back(m->parameters()[i].first, out->grads[i]);
              o.Set("grads", WrapPairs(env, named, true));
            }
            return o;
          });
    });
  }

  tangent::ModelPtr model_;
};

// createModel(kind, config, seed, dtype, device) -> NativeModel
Napi::Value CreateModel(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string kind = info[0].As<Napi::String>();
    auto cfg = info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
    const uint64_t seed = static_cast<uint64_t>(info[2].As<Napi::Number>().Int64Value());
    const auto dtype = ParseDType(info[3].As<Napi::String>());
    const auto device = ParseDevice(info[4].As<Napi::String>());
    tangent::check(at::isFloatingType(dtype), ErrorKind::DType, "model dtype must be floating point, got ",
                   DTypeName(dtype));
    tangent::ModelPtr m;
    if (kind == "mlp") {
      tangent::MlpConfig c;
      c.input_dim = Int(cfg, "inputDim", c.input_dim);
      c.hidden = IntList(cfg, "hidden", c.hidden);
      c.output_dim = Int(cfg, "outputDim", c.output_dim);
      if (cfg.Has("activation") && cfg.Get("activation").IsString()) c.activation = cfg.Get("activation").As<Napi::String>();
      m = tangent::make_mlp(c, seed, dtype, device);
    } else if (kind == "cnn") {
      tangent::CnnConfig c;
      c.in_channels = Int(cfg, "inChannels", c.in_channels);
      c.image_size = Int(cfg, "imageSize", c.image_size);
      c.channels = IntList(cfg, "channels", c.channels);
      c.output_dim = Int(cfg, "outputDim", c.output_dim);
      m = tangent::make_cnn(c, seed, dtype, device);
    } else if (kind == "vit") {
      tangent::VitConfig c;
      c.image_size = Int(cfg, "imageSize", c.image_size);
      c.patch_size = Int(cfg, "patchSize", c.patch_size);
      c.in_channels = Int(cfg, "inChannels", c.in_channels);
      c.dim = Int(cfg, "dim", c.dim);
      c.depth = Int(cfg, "depth", c.depth);
      c.heads = Int(cfg, "heads", c.heads);
      c.mlp_dim = Int(cfg, "mlpDim", c.mlp_dim);
      c.num_classes = Int(cfg, "numClasses", c.num_classes);
      m = tangent::make_vit(c, seed, dtype, device);
    } else if (kind == "clip-vision" || kind == "clip-text") {
      auto tower = [&](tangent::ClipTower& c) {
        c.width = Int(cfg, "width", c.width);
        c.layers = Int(cfg, "layers", c.layers);
        c.heads = Int(cfg, "heads", c.heads);
        c.mlp_dim = Int(cfg, "mlpDim", 4 * c.width);
        c.embed_dim = Int(cfg, "embedDim", c.embed_dim);
        c.quick_gelu = cfg.Has("quickGelu") && cfg.Get("quickGelu").ToBoolean();
      };
      if (kind == "clip-vision") {
        tangent::ClipVisionConfig c;
        tower(c);
        c.image_size = Int(cfg, "imageSize", c.image_size);
        c.patch_size = Int(cfg, "patchSize", c.patch_size);
        m = tangent::make_clip_vision(c, seed, dtype, device);
      } else {
        tangent::ClipTextConfig c;
        tower(c);
        c.context_length = Int(cfg, "contextLength", c.context_length);
        c.vocab_size = Int(cfg, "vocabSize", c.vocab_size);
        m = tangent::make_clip_text(c, seed, dtype, device);
      }
    } else {
      tangent::fail(ErrorKind::Argument, "unknown architecture '", kind, "' (expected mlp, cnn, vit, clip-vision or clip-text)");
    }
    return ModelWrap::Wrap(env, m);
  });
}

// loadTorchScript(path, device, output?: number | string) -> Promise<NativeModel>
Napi::Value LoadTorchScript(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string path = info[0].As<Napi::String>();
    const auto device = ParseDevice(info[1].As<Napi::String>());
    tangent::TorchScriptOptions opts;
    if (info[2].IsNumber()) opts.output_index = info[2].As<Napi::Number>().Int64Value();
    if (info[2].IsString()) opts.output_key = info[2].As<Napi::String>();
    auto out = std::make_shared<tangent::ModelPtr>();
    return Task::Run(env, "tangent.loadTorchScript",
                     [path, device, opts, out] { *out = tangent::load_torchscript(path, device, opts); },
                     [out](Napi::Env env) -> Napi::Value { return ModelWrap::Wrap(env, *out); });
  });
}

// A torch.export program as lib/checkpoint/pt2.ts hands it over (already checked there; what
// is malformed here is a TypeError, what the schema refuses a typed error from native/).
int64_t ExactInt(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (v.IsBigInt()) {
    bool lossless = false;
    const int64_t i = v.As<Napi::BigInt>().Int64Value(&lossless);
    if (!lossless) throw Napi::TypeError::New(env, what + ": integer out of the int64 range");
    return i;
  }
  if (!v.IsNumber()) throw Napi::TypeError::New(env, what + " must be an integer");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d == static_cast<double>(static_cast<int64_t>(d))) || d > 9007199254740991.0 || d < -9007199254740991.0)
    throw Napi::TypeError::New(env, what + " must be a safe integer or a BigInt");
  return static_cast<int64_t>(d);
}

std::vector<int64_t> ExactInts(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsArray()) throw Napi::TypeError::New(env, what + " must be an array");
  auto a = v.As<Napi::Array>();
  std::vector<int64_t> out(a.Length());
  for (uint32_t i = 0; i < out.size(); ++i) out[i] = ExactInt(env, a.Get(i), what);
  return out;
}

tangent::ExportArg ParseExportArg(Napi::Env env, const Napi::Object& o) {
  using K = tangent::ExportArg::Kind;
  tangent::ExportArg a;
  a.name = o.Get("name").As<Napi::String>();
  const std::string kind = o.Get("kind").As<Napi::String>();
  const std::string what = "argument '" + a.name + "'";
  const Napi::Value v = o.Get("value");
  auto array = [&]() {
    if (!v.IsArray()) throw Napi::TypeError::New(env, what + " must be an array");
    return v.As<Napi::Array>();
  };
  if (kind == "none") {
    a.constant = c10::IValue();
  } else if (kind == "int") {
    a.constant = ExactInt(env, v, what);
  } else if (kind == "float") {
    a.constant = v.As<Napi::Number>().DoubleValue();
  } else if (kind == "bool") {
    a.constant = v.As<Napi::Boolean>().Value();
  } else if (kind == "string") {
    a.constant = std::string(v.As<Napi::String>());
  } else if (kind == "ints") {
    a.constant = ExactInts(env, v, what);
  } else if (kind == "floats") {
    auto arr = array();
    std::vector<double> d(arr.Length());
    for (uint32_t i = 0; i < d.size(); ++i) d[i] = arr.Get(i).As<Napi::Number>().DoubleValue();
    a.constant = d;
  } else if (kind == "bools") {
    auto arr = array();
    c10::List<bool> l;
    for (uint32_t i = 0; i < arr.Length(); ++i) l.push_back(arr.Get(i).As<Napi::Boolean>().Value());
    a.constant = l;
  } else if (kind == "strings") {
    auto arr = array();
    std::vector<std::string> l;
    for (uint32_t i = 0; i < arr.Length(); ++i) l.push_back(arr.Get(i).As<Napi::String>());
    a.constant = c10::List<std::string>(l);
  } else if (kind == "device") {
    a.constant = ParseDevice(v.As<Napi::String>());
  } else if (kind == "enum") {  // ScalarType, Layout, MemoryFormat: their c10 codes, as IValue ints
    a.constant = ExactInt(env, v, what);
  } else if (kind == "value") {
    a.kind = K::Value;
    a.refs = {ExactInt(env, o.Get("ref"), what)};
  } else if (kind == "tensors" || kind == "optTensors" || kind == "symInts") {
    a.kind = kind == "tensors" ? K::TensorList : kind == "optTensors" ? K::OptTensorList : K::IntList;
    a.refs = ExactInts(env, o.Get("refs"), what);
    if (a.kind == K::IntList) a.literals = ExactInts(env, o.Get("literals"), what);
  } else {
    throw Napi::TypeError::New(env, what + ": unknown argument kind '" + kind + "'");
  }
  return a;
}

tangent::ExportedProgram ParseExportedProgram(Napi::Env env, const Napi::Object& p) {
  tangent::ExportedProgram prog;
  prog.path = p.Get("path").As<Napi::String>();
  prog.num_values = ExactInt(env, p.Get("numValues"), "numValues");
  prog.output = ExactInt(env, p.Get("output"), "output");
  auto state = p.Get("state").As<Napi::Array>();
  for (uint32_t i = 0; i < state.Length(); ++i) {
    auto o = state.Get(i).As<Napi::Object>();
    tangent::ExportState s;
    const std::string kind = o.Get("kind").As<Napi::String>();
    s.kind = kind == "parameter" ? tangent::ExportState::Kind::Parameter
             : kind == "buffer"  ? tangent::ExportState::Kind::Buffer
                                 : tangent::ExportState::Kind::Constant;
    s.name = o.Get("name").As<Napi::String>();
    s.value = ExactInt(env, o.Get("value"), "state value");
    s.tensor = UnwrapTensor(env, o.Get("tensor"), "state '" + s.name + "'");
    prog.state.push_back(std::move(s));
  }
  auto inputs = p.Get("inputs").As<Napi::Array>();
  for (uint32_t i = 0; i < inputs.Length(); ++i) {
    auto o = inputs.Get(i).As<Napi::Object>();
    tangent::ExportInput in;
    in.name = o.Get("name").As<Napi::String>();
    in.value = ExactInt(env, o.Get("value"), "input value");
    in.dtype = ParseDType(o.Get("dtype").As<Napi::String>());
    in.sizes = ExactInts(env, o.Get("sizes"), "input sizes");
    auto syms = o.Get("symbols").As<Napi::Array>();
    for (uint32_t k = 0; k < syms.Length(); ++k) in.symbols.push_back(syms.Get(k).As<Napi::String>());
    in.min_size = ExactInts(env, o.Get("min"), "input min");
    in.max_size = ExactInts(env, o.Get("max"), "input max");
    prog.inputs.push_back(std::move(in));
  }
  auto consts = p.Get("constantInputs").As<Napi::Array>();
  for (uint32_t i = 0; i < consts.Length(); ++i) {
    auto o = consts.Get(i).As<Napi::Object>();
    auto a = ParseExportArg(env, o.Get("arg").As<Napi::Object>());
    prog.constant_inputs.emplace_back(ExactInt(env, o.Get("value"), "constant input"), a.constant);
  }
  auto nodes = p.Get("nodes").As<Napi::Array>();
  prog.nodes.reserve(nodes.Length());
  for (uint32_t i = 0; i < nodes.Length(); ++i) {
    auto o = nodes.Get(i).As<Napi::Object>();
    tangent::ExportNode n;
    n.name = o.Get("name").As<Napi::String>();
    n.target = o.Get("target").As<Napi::String>();
    auto args = o.Get("args").As<Napi::Array>();
    for (uint32_t k = 0; k < args.Length(); ++k) n.args.push_back(ParseExportArg(env, args.Get(k).As<Napi::Object>()));
    auto outs = o.Get("outputs").As<Napi::Array>();
    auto lists = o.Get("listOutput").As<Napi::Array>();
    for (uint32_t k = 0; k < outs.Length(); ++k) {
      n.outputs.push_back(ExactInts(env, outs.Get(k), "node outputs"));
      n.list_output.push_back(k < lists.Length() && lists.Get(k).ToBoolean().Value());
    }
    prog.nodes.push_back(std::move(n));
  }
  return prog;
}

// loadExported(program, device) -> Promise<NativeModel>
Napi::Value LoadExported(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "program must be an object");
    auto prog = std::make_shared<tangent::ExportedProgram>(ParseExportedProgram(env, info[0].As<Napi::Object>()));
    const auto device = ParseDevice(info[1].As<Napi::String>());
    auto out = std::make_shared<tangent::ModelPtr>();
    return Task::Run(env, "tangent.loadExported",
                     [prog, device, out] { *out = tangent::load_exported(std::move(*prog), device); },
                     [out](Napi::Env env) -> Napi::Value { return ModelWrap::Wrap(env, *out); });
  });
}

}  // namespace

tangent::ModelPtr UnwrapModel(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(Data(env).model_ctor.Value()))
    throw Napi::TypeError::New(env, what + " must be a native model handle");
  return ModelWrap::Unwrap(v.As<Napi::Object>())->Handle(env);
}

Napi::Object InitModel(Napi::Env env, Napi::Object exports) {
  auto ctor = ModelWrap::Define(env);
  Data(env).model_ctor = Napi::Persistent(ctor);
  exports.Set("Model", ctor);
  exports.Set("createModel", Napi::Function::New(env, CreateModel));
  exports.Set("loadTorchScript", Napi::Function::New(env, LoadTorchScript));
  exports.Set("loadExported", Napi::Function::New(env, LoadExported));
  return exports;
}

}  // namespace tangent_js
