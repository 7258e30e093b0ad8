#include <array>
#include <cmath>

#include "../bmm.h"
#include "../model.h"
#include "init.h"

namespace tangent {
namespace {

// A small pre-LN Vision Transformer: patch embedding (a stride-P convolution), class token,
// learned position embedding, `depth` blocks of multi-head self-attention and a GELU MLP, a
// final LayerNorm, and a linear head on the class token (or the features if numClasses is 0).
class Vit final : public Model {
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

  at::Tensor forward(const std::vector<at::Tensor>& s, const at::Tensor& x) const override {
    at::Tensor y;
    run(s, nullptr, x, y, nullptr);
    return y;
  }

  bool tangent_forward(const std::vector<at::Tensor>& s, const std::vector<at::Tensor>& tangent,
                       const at::Tensor& x, at::Tensor& primal, at::Tensor& tangent_out) const override {
    std::vector<at::Tensor> v(num_parameters());
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = i < tangent.size() && tangent[i].defined() ? tangent[i] : at::zeros_like(s[i]);
    run(s, &v, x, primal, &tangent_out);
    return true;
  }

 private:
  // The network on (primal, tangent) pairs. With `tan` null it is the plain forward; with it the
  // same primal ops run (so the JVP's primal is forward()'s output bit for bit) and beside them
  // the tangent's, written out: for y = xWᵀ + b, ẏ = ẋWᵀ + xẆᵀ + ḃ as two accumulating GEMMs;
  // softmax and LayerNorm through their (symmetric) backward kernels, GELU through gelu_backward.
  // Forward-mode AD computes the same products, but through dual tensors: each op's tangent
  // formula as separate kernels, extra copies for the 4-D attention matmuls, and additions that
  // the GEMMs' accumulation does here for free.
  void run(const std::vector<at::Tensor>& s, const std::vector<at::Tensor>* tan, const at::Tensor& x,
           at::Tensor& y, at::Tensor* yt) const {
    const int64_t B = x.size(0), D = cfg_.dim, H = cfg_.heads, hd = D / H, T = tokens();
    const bool jvp = tan != nullptr;
    size_t i = 0;
    const at::Tensor none;
    // The next parameter and its tangent.
    auto next = [&]() -> std::pair<const at::Tensor&, const at::Tensor&> {
      const size_t k = i++;
      return {s[k], jvp ? (*tan)[k] : none};
    };
    // y = a Wᵀ + b on rows [M, K]; ẏ = ȧ Wᵀ + a Ẇᵀ + ḃ.
    auto linear = [&](const at::Tensor& a, const at::Tensor& at_) -> std::pair<at::Tensor, at::Tensor> {
      auto [w, wt] = next();
      auto [b, bt] = next();
      at::Tensor out = at::addmm(b, a, w.t());
      if (!jvp) return {out, {}};
      // The second product accumulates in place (addmm would copy the first into a new output);
      // autograd allows it: addmm's backward does not read its `self`.
      return {out, at::addmm(bt, at_, w.t()).addmm_(a, wt.t())};
    };
    // LayerNorm over the last dim: a = n ⊙ w + b with n = (h − μ)·rstd; ṅ is LayerNorm's input
    // gradient (its Jacobian is symmetric), ȧ = ṅ ⊙ w + n ⊙ ẇ + ḃ.
    auto layer_norm = [&](const at::Tensor& h, const at::Tensor& ht) -> std::pair<at::Tensor, at::Tensor> {
      auto [w, wt] = next();
      auto [b, bt] = next();
      auto r = at::native_layer_norm(h, {D}, w, b, 1e-5);
      if (!jvp) return {std::get<0>(r), {}};
      const at::Tensor& mean = std::get<1>(r);
      const at::Tensor& rstd = std::get<2>(r);
      at::Tensor n = (h - mean) * rstd;
      at::Tensor nt = std::get<0>(at::native_layer_norm_backward(ht, h, {D}, mean, rstd, {}, {},
                                                                  {true, false, false}));
      return {std::get<0>(r), at::addcmul(at::addcmul(bt, nt, w), n, wt)};
    };

    at::Tensor h, ht;
    {
      auto [pw, pwt] = next();
      auto [pb, pbt] = next();
      h = at::conv2d(x, pw, pb, cfg_.patch_size).flatten(2).transpose(1, 2);  // [B,N,D]
      if (jvp) ht = at::conv2d(x, pwt, pbt, cfg_.patch_size).flatten(2).transpose(1, 2);
      auto [cls, clst] = next();
      auto [pos, post] = next();
      h = at::cat({cls.expand({B, 1, D}), h}, 1) + pos;
      if (jvp) ht = at::cat({clst.expand({B, 1, D}), ht}, 1) + post;
    }
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    // Head `which` (0 q, 1 k, 2 v) of the fused projection [B·T, 3D] as [B, H, T, hd] matrices:
    // strided views that batched_matmul reads in place, no copies.
    auto head = [&](const at::Tensor& qkv, int64_t which) {
      return qkv.view({B, T, 3, H, hd}).select(2, which).permute({0, 2, 1, 3});
    };
    // Attention outputs [B, H, T, hd] are written as [B, T, H, hd]: the [B·T, D] rows the output
    // projection reads, so merging the heads is a view.
    const std::vector<int64_t> tokens_major{0, 2, 1, 3};
    auto merge_heads = [&](const at::Tensor& o) { return o.transpose(1, 2).reshape({B * T, D}); };
    // [B, T, D] as the [B·T, D] rows a linear layer reads (an undefined tangent stays undefined).
    auto rows = [&](const at::Tensor& t) { return t.defined() ? t.view({B * T, D}) : t; };
    for (int64_t blk = 0; blk < cfg_.depth; ++blk) {
      auto [a, at_] = layer_norm(h, ht);
      auto [qkv, qkvt] = linear(rows(a), rows(at_));
      const at::Tensor q = head(qkv, 0), kT = head(qkv, 1).transpose(-2, -1), v = head(qkv, 2);
      at::Tensor att = at::softmax(batched_matmul({q, kT}, {}, scale), -1);  // [B, H, T, T]
      at::Tensor o = merge_heads(batched_matmul({att, v}, {}, 1, tokens_major));
      at::Tensor ot;
      if (jvp) {
        // Ṡ = (q̇kᵀ + qk̇ᵀ)·scale; Ṗ = softmax's Jacobian applied to Ṡ; Ȯ = Ṗv + Pv̇.
        const at::Tensor qt = head(qkvt, 0), kTt = head(qkvt, 1).transpose(-2, -1), vt = head(qkvt, 2);
        at::Tensor st = batched_matmul({qt, kT}, {q, kTt}, scale);
        at::Tensor pt = at::_softmax_backward_data(st, att, -1, att.scalar_type());
        ot = merge_heads(batched_matmul({pt, v}, {att, vt}, 1, tokens_major));
      }
      auto [pr, prt] = linear(o, ot);
      h = h + pr.view({B, T, D});
      if (jvp) ht = ht + prt.view({B, T, D});
      auto [m, mt] = layer_norm(h, ht);
      auto [u, ut] = linear(rows(m), rows(mt));
      at::Tensor g = at::gelu(u);
      at::Tensor gt = jvp ? at::gelu_backward(ut, u) : at::Tensor();
      auto [f, ft] = linear(g, gt);
      h = h + f.view({B, T, D});
      if (jvp) ht = ht + ft.view({B, T, D});
    }
    auto feat = layer_norm(h.select(1, 0), jvp ? ht.select(1, 0) : ht);
    auto out = cfg_.num_classes > 0 ? linear(feat.first, feat.second) : feat;  // features or logits
    y = out.first;
    if (jvp) *yt = out.second;
  }

  VitConfig cfg_;
};

}  // namespace

ModelPtr make_vit(const VitConfig& cfg, uint64_t seed, at::ScalarType dtype, at::Device device) {
  return std::make_shared<Vit>(cfg, seed, dtype, device);
}

}  // namespace tangent
