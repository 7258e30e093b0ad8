#include "../model.h"
#include "init.h"

namespace tangent {

at::Tensor activation(const std::string& name, const at::Tensor& x) {
  if (name == "relu") return at::relu(x);
  if (name == "tanh") return at::tanh(x);
  return at::gelu(x);
}

namespace {

class Mlp final : public Model {
 public:
  Mlp(const MlpConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device) : cfg_(cfg) {
    check(cfg.input_dim > 0 && cfg.output_dim > 0, ErrorKind::Argument,
          "mlp: inputDim and outputDim must be positive");
    check(cfg.activation == "relu" || cfg.activation == "gelu" || cfg.activation == "tanh",
          ErrorKind::Argument, "mlp: activation must be relu, gelu or tanh, got '", cfg.activation,
          "'");
    dtype_ = dtype;
    Init init(seed, dtype, device);
    int64_t in = cfg.input_dim;
    std::vector<int64_t> dims = cfg.hidden;
    dims.push_back(cfg.output_dim);
    for (size_t i = 0; i < dims.size(); ++i) {
      check(dims[i] > 0, ErrorKind::Argument, "mlp: hidden sizes must be positive");
      const std::string p = "layers." + std::to_string(i);
      add_parameter(p + ".weight", init.fan_in_uniform({dims[i], in}, in));
      add_parameter(p + ".bias", init.fan_in_uniform({dims[i]}, in));
      in = dims[i];
    }
  }

  std::string kind() const override { return "mlp"; }

  void check_input(const at::Tensor& x) const override {
    Model::check_input(x);
    check(x.dim() >= 2 && x.numel() / std::max<int64_t>(x.size(0), 1) == cfg_.input_dim,
          ErrorKind::Shape, "mlp expects input [batch, ", cfg_.input_dim,
          "] (or [batch, ...] with ", cfg_.input_dim, " features), got ", shape_str(x.sizes()));
  }

  at::Tensor forward(const std::vector<at::Tensor>& s, const at::Tensor& x) const override {
    at::Tensor h = x.reshape({x.size(0), cfg_.input_dim});
    const size_t layers = s.size() / 2;
    for (size_t i = 0; i < layers; ++i) {
      h = at::linear(h, s[2 * i], s[2 * i + 1]);
      if (i + 1 < layers) h = activation(cfg_.activation, h);
    }
    return h;
  }

 private:
  MlpConfig cfg_;
};

}  // namespace

ModelPtr make_mlp(const MlpConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device) {
  return std::make_shared<Mlp>(cfg, seed, dtype, device);
}

}  // namespace tangent
