// Models with a functional forward: forward(params, x) runs with any parameter set and never
// mutates the model, so many parameter sets (θ0, θ_t, θ0 + Σ α τ) share one model.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common.h"

namespace tangent {

class Model {
 public:
  virtual ~Model() = default;

  // "mlp", "cnn", "vit", "clip-vision", "clip-text", "torchscript", "exported".
  virtual std::string kind() const = 0;

  // Trainable parameters in declaration order (the model's own θ0), and non-trainable buffers.
  const NamedTensors& parameters() const { return params_; }
  const NamedTensors& buffers() const { return buffers_; }

  // Resolve a named parameter set against the model: every parameter present exactly once,
  // no unknown names, same shape and dtype as the model's own; buffers may optionally be
  // overridden. Returns tensors in parameters() order followed by buffers() order.
  std::vector<at::Tensor> resolve(const NamedTensors& params) const;
  // The model's own parameters and buffers, in that same order.
  std::vector<at::Tensor> own_state() const;

  // Functional forward on a resolved state (resolve()/own_state() order).
  virtual at::Tensor forward(const std::vector<at::Tensor>& state, const at::Tensor& x) const = 0;

  // Validate x before running (shape, dtype, device); throws tangent::Error.
  virtual void check_input(const at::Tensor& x) const;

  // Models whose forward takes several tensors (TorchScript: forward(x, mask)); inputs[0] is x.
  // The built-in architectures take one.
  virtual size_t num_inputs() const { return 1; }
  virtual size_t num_required_inputs() const { return 1; }
  virtual std::string input_names() const { return "x"; }
  virtual at::Tensor forward_inputs(const std::vector<at::Tensor>& state,
                                    const std::vector<at::Tensor>& inputs) const;

  // A hand-written JVP, for architectures whose tangent is cheaper written out than traced by
  // forward-mode AD: (f(x; θ0), J_θ f(x; θ0) · v) from plain ATen ops on (primal, tangent) pairs,
  // so reverse mode differentiates it in v (the linearized train step). `tangent` has one entry
  // per parameter (undefined: zero). Returns false when the model has none; callers then use
  // forward-mode AD (native/src/autodiff.cpp), which must agree with it to rounding.
  virtual bool tangent_forward(const std::vector<at::Tensor>& state0,
                               const std::vector<at::Tensor>& tangent, const at::Tensor& x,
                               at::Tensor& primal, at::Tensor& tangent_out) const {
    return false;
  }

  size_t num_parameters() const { return params_.size(); }
  // Position of a trainable parameter in parameters(), or -1 (buffers and unknown names).
  int64_t parameter_index(const std::string& name) const;
  int64_t numel() const;

 protected:
  void add_parameter(std::string name, at::Tensor t);
  void add_buffer(std::string name, at::Tensor t);
  at::ScalarType dtype_ = at::kFloat;

 private:
  NamedTensors params_;
  NamedTensors buffers_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in params_ then buffers_
};

using ModelPtr = std::shared_ptr<const Model>;

struct MlpConfig {
  int64_t input_dim = 784;
  std::vector<int64_t> hidden{128};
  int64_t output_dim = 10;
  std::string activation = "gelu";  // relu | gelu | tanh
};

struct CnnConfig {
  int64_t in_channels = 1;
  int64_t image_size = 28;
  std::vector<int64_t> channels{16, 32};  // each a 3x3 stride-2 conv + activation
  int64_t output_dim = 10;
};

struct VitConfig {
  int64_t image_size = 28;
  int64_t patch_size = 4;
  int64_t in_channels = 1;
  int64_t dim = 128;
  int64_t depth = 4;
  int64_t heads = 4;
  int64_t mlp_dim = 256;
  int64_t num_classes = 10;  // 0: output the final class-token features
};

// CLIP's towers (native/models/clip.cpp): open_clip's architecture and parameter names.
struct ClipTower {
  int64_t width = 768;
  int64_t layers = 12;
  int64_t heads = 12;
  int64_t mlp_dim = 3072;
  int64_t embed_dim = 512;  // the joint embedding (the projection's output)
  bool quick_gelu = false;  // x·σ(1.702x), as OpenAI's weights were trained; else exact GELU
};
struct ClipVisionConfig : ClipTower {
  int64_t image_size = 224;
  int64_t patch_size = 32;
};
struct ClipTextConfig : ClipTower {
  int64_t context_length = 77;
  int64_t vocab_size = 49408;
};

ModelPtr make_mlp(const MlpConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device);
ModelPtr make_cnn(const CnnConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device);
ModelPtr make_vit(const VitConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device);
ModelPtr make_clip_vision(const ClipVisionConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device);
ModelPtr make_clip_text(const ClipTextConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device);
// A view of `m` whose forward(state, x) runs m.forward_inputs(state, {x, extra...}): the extra
// inputs (masks, ...) ride along every forward, JVP and gradient without being differentiated.
ModelPtr with_inputs(ModelPtr m, std::vector<at::Tensor> extra);
// `m`'s architecture with `state` (every parameter, optionally buffers; checked as resolve()) as
// its own θ0: what Model.withParameters returns (pretrained weights as the model's defaults).
ModelPtr with_state(ModelPtr m, const NamedTensors& state);

struct TorchScriptOptions {
  // Which element of a tuple, list or dict result is the model's output: an index (tuples and
  // lists) or a key (dicts, named-tuple fields). Unset (-1 / empty) for a tensor result.
  int64_t output_index = -1;
  std::string output_key;
};

// A TorchScript module saved by torch.jit.save (scripted or traced). Its forward is lowered to a
// graph that reads no module state: parameters and buffers become explicit graph inputs, plain
// attributes constants of the eval-mode module (native/models/torchscript.cpp). What cannot be
// lowered is an ErrorKind::Unsupported naming the attribute, argument or op.
ModelPtr load_torchscript(const std::string& path, at::Device device,
                          const TorchScriptOptions& opts = {});

// A torch.export program (.pt2), read and checked as data in TypeScript (lib/checkpoint/pt2.ts)
// and run here node by node through the c10 dispatcher (native/models/exported.cpp). Values are
// numbered 0..num_values-1; a node reads values and constants and writes values.
struct ExportArg {
  enum class Kind {
    Constant,        // `constant` as is (coerced to the schema's type at load)
    Value,           // one value: a tensor or a symbolic int
    TensorList,      // Tensor[]: refs
    OptTensorList,   // Tensor?[]: refs, -1 for None
    IntList,         // SymInt[] mixing values and literals: refs, -1 where `literals` holds the int
  };
  std::string name;  // the operator schema's argument name
  Kind kind = Kind::Constant;
  c10::IValue constant;
  std::vector<int64_t> refs;
  std::vector<int64_t> literals;
};

struct ExportNode {
  std::string name;    // the graph's node name, for errors
  std::string target;  // "aten::linear.default", or "_operator.mul" (symbolic int arithmetic)
  std::vector<ExportArg> args;
  // One entry per schema return: the value it is bound to (-1: unused), or, for a Tensor[]
  // return, the values of its elements (`list_output`).
  std::vector<std::vector<int64_t>> outputs;
  std::vector<bool> list_output;
};

struct ExportInput {
  std::string name;
  int64_t value = -1;
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> sizes;            // -1 where the dimension is symbolic
  std::vector<std::string> symbols;      // the symbol of each symbolic dimension ("" if static)
  std::vector<int64_t> min_size, max_size;  // bounds of symbolic dimensions (-1: none)
};

struct ExportState {
  enum class Kind { Parameter, Buffer, Constant };
  Kind kind = Kind::Parameter;
  std::string name;   // parameter_name / buffer_name / tensor constant name
  int64_t value = -1;
  at::Tensor tensor;
};

struct ExportedProgram {
  std::string path;
  int64_t num_values = 0;
  std::vector<ExportState> state;   // graph-signature order
  std::vector<ExportInput> inputs;  // user inputs, in order
  std::vector<std::pair<int64_t, c10::IValue>> constant_inputs;  // inputs fed a constant
  std::vector<ExportNode> nodes;
  int64_t output = -1;  // the value the model returns (chosen from the user outputs in TS)
};

// Checks every node against its operator's schema (allow-listed namespaces only) and builds the
// model; what cannot run is an ErrorKind::Unsupported naming the node and operator.
ModelPtr load_exported(ExportedProgram program, at::Device device);

}  // namespace tangent
