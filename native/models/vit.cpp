#include <array>
#include <cmath>

#include "../model.h"
#include "init.h"
#include "transformer.h"

namespace tangent {
namespace {

// A small pre-LN Vision Transformer: patch embedding (a stride-P convolution), class token,
// learned position embedding, `depth` blocks of multi-head self-attention and a GELU MLP, a
// final LayerNorm, and a linear head on the class token (or the features if numClasses is 0).
class Vit final : public DualModel {
 public:
  Vit(const VitConfig& c, uint64_t seed, at::ScalarType dtype, at::Device device) : cfg_(c) {
    check(c.image_size > 0 && c.patch_size > 0 && c.in_channels > 0 && c.dim > 0 && c.depth >= 0 &&
              c.heads > 0 && c.mlp_dim > 0 && c.num_classes >= 0,
          ErrorKind::Argument, "vit: sizes must be positive");
    check(c.image_size % c.patch_size == 0, ErrorKind::Argument, "vit: imageSize ", c.image_size,
          " is not a multiple of patchSize ", c.patch_size);
    check(c.dim % c.heads == 0, ErrorKind::Argument, "vit: dim ", c.dim,
          " is not a multiple of heads ", c.heads);
    dtype_ = dtype;
    Init init(seed, dtype, device);
    const int64_t D = c.dim, P = c.patch_size, T = tokens();
    add_parameter("patch_embed.weight",
                  init.fan_in_uniform({D, c.in_channels, P, P}, c.in_channels * P * P));
    add_parameter("patch_embed.bias", init.fan_in_uniform({D}, c.in_channels * P * P));
    add_parameter("cls_token", init.normal({1, 1, D}, 0.02));
    add_parameter("pos_embed", init.normal({1, T, D}, 0.02));
    for (int64_t b = 0; b < c.depth; ++b) {
      const std::string p = "blocks." + std::to_string(b) + ".";
      add_parameter(p + "norm1.weight", init.fill({D}, 1.0));
      add_parameter(p + "norm1.bias", init.fill({D}, 0.0));
      add_parameter(p + "attn.qkv.weight", init.fan_in_uniform({3 * D, D}, D));
      add_parameter(p + "attn.qkv.bias", init.fan_in_uniform({3 * D}, D));
      add_parameter(p + "attn.proj.weight", init.fan_in_uniform({D, D}, D));
      add_parameter(p + "attn.proj.bias", init.fan_in_uniform({D}, D));
      add_parameter(p + "norm2.weight", init.fill({D}, 1.0));
      add_parameter(p + "norm2.bias", init.fill({D}, 0.0));
      add_parameter(p + "mlp.fc1.weight", init.fan_in_uniform({c.mlp_dim, D}, D));
      add_parameter(p + "mlp.fc1.bias", init.fan_in_uniform({c.mlp_dim}, D));
      add_parameter(p + "mlp.fc2.weight", init.fan_in_uniform({D, c.mlp_dim}, c.mlp_dim));
      add_parameter(p + "mlp.fc2.bias", init.fan_in_uniform({D}, c.mlp_dim));
    }
    add_parameter("norm.weight", init.fill({D}, 1.0));
    add_parameter("norm.bias", init.fill({D}, 0.0));
    if (c.num_classes > 0) {
      add_parameter("head.weight", init.fan_in_uniform({c.num_classes, D}, D));
      add_parameter("head.bias", init.fan_in_uniform({c.num_classes}, D));
    }
  }

  std::string kind() const override { return "vit"; }

  int64_t tokens() const {
    const int64_t g = cfg_.image_size / cfg_.patch_size;
    return g * g + 1;
  }

  void check_input(const at::Tensor& x) const override {
    Model::check_input(x);
    check(x.dim() == 4 && x.size(1) == cfg_.in_channels && x.size(2) == cfg_.image_size &&
              x.size(3) == cfg_.image_size,
          ErrorKind::Shape, "vit expects input [batch, ", cfg_.in_channels, ", ", cfg_.image_size,
          ", ", cfg_.image_size, "], got ", shape_str(x.sizes()));
  }

 private:
  // The network on (primal, tangent) pairs (native/models/transformer.h).
  Dual run(const DualPass& p, const at::Tensor& x) const override {
    const int64_t B = x.size(0), D = cfg_.dim;
    Dual h;
    {
      auto [pw, pwt] = p.param(0);
      auto [pb, pbt] = p.param(1);
      auto [cls, clst] = p.param(2);
      auto [pos, post] = p.param(3);
      h.first = at::cat({cls.expand({B, 1, D}), at::conv2d(x, pw, pb, cfg_.patch_size).flatten(2).transpose(1, 2)}, 1) + pos;
      if (p.jvp())
        h.second = at::cat({clst.expand({B, 1, D}), at::conv2d(x, pwt, pbt, cfg_.patch_size).flatten(2).transpose(1, 2)}, 1) + post;
    }
    size_t k = 4;
    for (int64_t blk = 0; blk < cfg_.depth; ++blk, k += 12) h = p.block(h, k, cfg_.heads, Activation::Gelu);
    Dual cls{h.first.select(1, 0), p.jvp() ? h.second.select(1, 0) : at::Tensor()};
    Dual feat = p.layer_norm(cls, k);
    Dual out = cfg_.num_classes > 0 ? p.linear(feat, k + 2) : feat;  // features or logits
    return out;
  }

  VitConfig cfg_;
};

}  // namespace

ModelPtr make_vit(const VitConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device) {
  return std::make_shared<Vit>(cfg, seed, dtype, device);
}

}  // namespace tangent
