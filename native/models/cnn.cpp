#include "../model.h"
#include "init.h"

namespace tangent {
namespace {

// A small CNN: 3x3 stride-2 convolutions with GELU, global average pooling, a linear output.
class Cnn final : public Model {
 public:
  Cnn(const CnnConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device) : cfg_(cfg) {
    check(cfg.in_channels > 0 && cfg.image_size > 0 && cfg.output_dim > 0 && !cfg.channels.empty(),
          ErrorKind::Argument, "cnn: inChannels, imageSize, outputDim and channels must be positive");
    dtype_ = dtype;
    Init init(seed, dtype, device);
    int64_t in = cfg.in_channels;
    for (size_t i = 0; i < cfg.channels.size(); ++i) {
      const int64_t out = cfg.channels[i];
      check(out > 0, ErrorKind::Argument, "cnn: channel counts must be positive");
      const std::string p = "convs." + std::to_string(i);
      add_parameter(p + ".weight", init.fan_in_uniform({out, in, 3, 3}, in * 9));
      add_parameter(p + ".bias", init.fan_in_uniform({out}, in * 9));
      in = out;
    }
    add_parameter("fc.weight", init.fan_in_uniform({cfg.output_dim, in}, in));
    add_parameter("fc.bias", init.fan_in_uniform({cfg.output_dim}, in));
  }

  std::string kind() const override { return "cnn"; }

  void check_input(const at::Tensor& x) const override {
    Model::check_input(x);
    check(x.dim() == 4 && x.size(1) == cfg_.in_channels && x.size(2) == cfg_.image_size &&
              x.size(3) == cfg_.image_size,
          ErrorKind::Shape, "cnn expects input [batch, ", cfg_.in_channels, ", ", cfg_.image_size,
          ", ", cfg_.image_size, "], got ", shape_str(x.sizes()));
  }

  at::Tensor forward(const std::vector<at::Tensor>& s, const at::Tensor& x) const override {
    at::Tensor h = x;
    const size_t convs = cfg_.channels.size();
    for (size_t i = 0; i < convs; ++i)
      h = at::gelu(at::conv2d(h, s[2 * i], s[2 * i + 1], /*stride=*/2, /*padding=*/1));
    h = h.mean({2, 3});
    return at::linear(h, s[2 * convs], s[2 * convs + 1]);
  }

 private:
  CnnConfig cfg_;
};

}  // namespace

ModelPtr make_cnn(const CnnConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device) {
  return std::make_shared<Cnn>(cfg, seed, dtype, device);
}

}  // namespace tangent
