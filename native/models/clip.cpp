// CLIP's two towers (Radford et al. 2021) as open_clip builds them, with open_clip's parameter
// names (weights from transformers' layout are renamed in lib/clip/weights.ts):
// - image: a bias-free stride-P patch convolution, class token, positional embedding, ln_pre,
//   pre-LN residual attention blocks, ln_post on the class token, projection `proj` [W, E];
// - text: token and positional embeddings, the same blocks under a causal mask, ln_final, the
//   features at the end-of-text token (the largest id, as open_clip's argmax pooling), projection
//   `text_projection` [W, E].
// Both have a hand-written JVP (native/models/transformer.h), exact against forward-mode AD.
#include <algorithm>
#include <cmath>
#include <limits>

#include "../model.h"
#include "init.h"
#include "transformer.h"

namespace tangent {
namespace {

void check_tower(const ClipTower& c, const char* what) {
  check(c.width > 0 && c.layers >= 0 && c.heads > 0 && c.mlp_dim > 0 && c.embed_dim > 0, ErrorKind::Argument,
        what, ": sizes must be positive");
  check(c.width % c.heads == 0, ErrorKind::Argument, what, ": width ", c.width, " is not a multiple of heads ",
        c.heads);
}

// The towers' shared parameter declarations.
class ClipBase : public DualModel {
 protected:
  void add(std::string name, at::Tensor t) { add_parameter(std::move(name), std::move(t)); }

  // The blocks' parameters, named as open_clip's ResidualAttentionBlock (nn.MultiheadAttention's
  // fused in_proj), in the order DualPass::block reads them; open_clip's initialisation scales.
  void add_blocks(Init& init, const std::string& prefix, const ClipTower& c) {
    const int64_t W = c.width;
    const double attn_std = std::pow(static_cast<double>(W), -0.5);
    const double proj_std = attn_std * std::pow(2.0 * std::max<int64_t>(c.layers, 1), -0.5);
    const double fc_std = std::pow(2.0 * W, -0.5);
    for (int64_t b = 0; b < c.layers; ++b) {
      const std::string p = prefix + "transformer.resblocks." + std::to_string(b) + ".";
      add(p + "ln_1.weight", init.fill({W}, 1.0));
      add(p + "ln_1.bias", init.fill({W}, 0.0));
      add(p + "attn.in_proj_weight", init.normal({3 * W, W}, attn_std));
      add(p + "attn.in_proj_bias", init.fill({3 * W}, 0.0));
      add(p + "attn.out_proj.weight", init.normal({W, W}, proj_std));
      add(p + "attn.out_proj.bias", init.fill({W}, 0.0));
      add(p + "ln_2.weight", init.fill({W}, 1.0));
      add(p + "ln_2.bias", init.fill({W}, 0.0));
      add(p + "mlp.c_fc.weight", init.normal({c.mlp_dim, W}, fc_std));
      add(p + "mlp.c_fc.bias", init.fill({c.mlp_dim}, 0.0));
      add(p + "mlp.c_proj.weight", init.normal({W, c.mlp_dim}, proj_std));
      add(p + "mlp.c_proj.bias", init.fill({W}, 0.0));
    }
  }
};

class ClipVision final : public ClipBase {
 public:
  ClipVision(const ClipVisionConfig& c, uint64_t seed, at::ScalarType dtype, at::Device device) : cfg_(c) {
    check_tower(c, "clip image tower");
    check(c.image_size > 0 && c.patch_size > 0, ErrorKind::Argument, "clip image tower: sizes must be positive");
    check(c.image_size % c.patch_size == 0, ErrorKind::Argument, "clip image tower: imageSize ", c.image_size,
          " is not a multiple of patchSize ", c.patch_size);
    dtype_ = dtype;
    Init init(seed, dtype, device);
    const int64_t W = c.width, P = c.patch_size, g = c.image_size / P;
    const double s = std::pow(static_cast<double>(W), -0.5);
    // open_clip's state_dict order.
    add("visual.class_embedding", init.normal({W}, s));
    add("visual.positional_embedding", init.normal({g * g + 1, W}, s));
    add("visual.proj", init.normal({W, c.embed_dim}, s));
    add("visual.conv1.weight", init.fan_in_uniform({W, 3, P, P}, 3 * P * P));
    add("visual.ln_pre.weight", init.fill({W}, 1.0));
    add("visual.ln_pre.bias", init.fill({W}, 0.0));
    add_blocks(init, "visual.", c);
    add("visual.ln_post.weight", init.fill({W}, 1.0));
    add("visual.ln_post.bias", init.fill({W}, 0.0));
  }

  std::string kind() const override { return "clip-vision"; }

  void check_input(const at::Tensor& x) const override {
    Model::check_input(x);
    check(x.dim() == 4 && x.size(0) > 0 && x.size(1) == 3 && x.size(2) == cfg_.image_size &&
              x.size(3) == cfg_.image_size,
          ErrorKind::Shape, "clip image tower expects input [batch, 3, ", cfg_.image_size, ", ",
          cfg_.image_size, "] (batch >= 1), got ", shape_str(x.sizes()));
  }

 private:
  Dual run(const DualPass& p, const at::Tensor& x) const override {
    const int64_t B = x.size(0), W = cfg_.width;
    auto [cls, clst] = p.param(0);
    auto [pos, post] = p.param(1);
    auto [conv, convt] = p.param(3);
    // Patches [B, W, g, g] → tokens [B, g², W], the class token first, then the positions.
    auto embed = [&](const at::Tensor& c, const at::Tensor& w, const at::Tensor& e) {
      return at::cat({c.expand({B, 1, W}), at::conv2d(x, w, {}, cfg_.patch_size).flatten(2).transpose(1, 2)}, 1) + e;
    };
    Dual h{embed(cls, conv, pos), p.jvp() ? embed(clst, convt, post) : at::Tensor()};
    h = p.layer_norm(h, 4);
    size_t k = 6;
    const Activation act = cfg_.quick_gelu ? Activation::QuickGelu : Activation::Gelu;
    for (int64_t b = 0; b < cfg_.layers; ++b, k += 12) h = p.block(h, k, cfg_.heads, act);
    Dual c0{h.first.select(1, 0), p.jvp() ? h.second.select(1, 0) : at::Tensor()};
    Dual out = p.project(p.layer_norm(c0, k), 2);
    return out;
  }

  ClipVisionConfig cfg_;
};

class ClipText final : public ClipBase {
 public:
  ClipText(const ClipTextConfig& c, uint64_t seed, at::ScalarType dtype, at::Device device) : cfg_(c) {
    check_tower(c, "clip text tower");
    check(c.context_length > 0 && c.vocab_size > 0, ErrorKind::Argument, "clip text tower: sizes must be positive");
    dtype_ = dtype;
    Init init(seed, dtype, device);
    const int64_t W = c.width;
    add("positional_embedding", init.normal({c.context_length, W}, 0.01));
    add("text_projection", init.normal({W, c.embed_dim}, std::pow(static_cast<double>(W), -0.5)));
    add_blocks(init, "", c);
    add("token_embedding.weight", init.normal({c.vocab_size, W}, 0.02));
    add("ln_final.weight", init.fill({W}, 1.0));
    add("ln_final.bias", init.fill({W}, 0.0));
    // −inf above the diagonal: each token attends to itself and those before it.
    mask_ = at::full({c.context_length, c.context_length}, -std::numeric_limits<double>::infinity(),
                     at::TensorOptions().dtype(dtype).device(device))
                .triu_(1);
  }

  std::string kind() const override { return "clip-text"; }

  void check_input(const at::Tensor& x) const override {
    check(x.defined(), ErrorKind::Argument, "input is undefined");
    check(x.scalar_type() == at::kLong, ErrorKind::DType,
          "clip text tower expects token ids of dtype int64, got ", c10::toString(x.scalar_type()));
    check(x.dim() == 2 && x.size(0) > 0 && x.size(1) > 0 && x.size(1) <= cfg_.context_length, ErrorKind::Shape,
          "clip text tower expects token ids [batch, length] with 1 <= length <= ", cfg_.context_length,
          " (batch >= 1), got ", shape_str(x.sizes()));
    const auto dev = parameters().front().second.device();
    check(x.device() == dev, ErrorKind::Device, "input is on ", x.device().str(), ", clip text tower is on ",
          dev.str());
    const auto lo = x.min().item<int64_t>(), hi = x.max().item<int64_t>();
    check(lo >= 0 && hi < cfg_.vocab_size, ErrorKind::Argument, "clip text tower: token ids must be in [0, ",
          cfg_.vocab_size, "), got ", lo < 0 ? lo : hi);
  }

 private:
  Dual run(const DualPass& p, const at::Tensor& ids) const override {
    const int64_t B = ids.size(0), L = ids.size(1), W = cfg_.width;
    const size_t tok = 2 + 12 * static_cast<size_t>(cfg_.layers);
    auto [pos, post] = p.param(0);
    auto [emb, embt] = p.param(tok);
    const at::Tensor flat = ids.reshape({B * L});
    auto embed = [&](const at::Tensor& e, const at::Tensor& q) {
      return e.index_select(0, flat).view({B, L, W}) + q.narrow(0, 0, L);
    };
    Dual h{embed(emb, pos), p.jvp() ? embed(embt, post) : at::Tensor()};
    const at::Tensor mask = mask_.narrow(0, 0, L).narrow(1, 0, L);
    const Activation act = cfg_.quick_gelu ? Activation::QuickGelu : Activation::Gelu;
    for (int64_t b = 0; b < cfg_.layers; ++b) h = p.block(h, 2 + 12 * b, cfg_.heads, act, mask);
    // The end-of-text token's features: the first position of each row's largest id.
    const at::Tensor eot = ids.argmax(-1);
    const at::Tensor at_eot = at::arange(B, ids.options()) * L + eot;
    auto pool = [&](const at::Tensor& t) { return t.reshape({B * L, W}).index_select(0, at_eot); };
    Dual f{pool(h.first), p.jvp() ? pool(h.second) : at::Tensor()};
    Dual out = p.project(p.layer_norm(f, tok + 1), 1);
    return out;
  }

  ClipTextConfig cfg_;
  at::Tensor mask_;
};

}  // namespace

ModelPtr make_clip_vision(const ClipVisionConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device) {
  return std::make_shared<ClipVision>(cfg, seed, dtype, device);
}

ModelPtr make_clip_text(const ClipTextConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device) {
  return std::make_shared<ClipText>(cfg, seed, dtype, device);
}

}  // namespace tangent
