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

  // "mlp", "cnn", "vit", "torchscript".
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

ModelPtr make_mlp(const MlpConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device);
ModelPtr make_cnn(const CnnConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device);
ModelPtr make_vit(const VitConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device);
// A TorchScript module saved by torch.jit.save; its forward graph is lowered so that every
// parameter and buffer becomes an explicit graph input.
ModelPtr load_torchscript(const std::string& path, at::Device device);

}  // namespace tangent
