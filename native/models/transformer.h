// Pre-LN transformer pieces on (primal, tangent) pairs, shared by the built-in ViT
// (native/models/vit.cpp) and CLIP's towers (native/models/clip.cpp).
//
// Each piece runs the plain forward when no tangent is given, and with one the same primal ops
// (so a JVP's primal equals forward()'s output bit for bit) with the tangent's written out beside
// them: for y = xWᵀ + b, ẏ = ẋWᵀ + xẆᵀ + ḃ as two accumulating GEMMs; softmax and LayerNorm
// through their (symmetric) backward kernels, GELU through gelu_backward. Forward-mode AD
// computes the same products, but through dual tensors: each op's tangent formula as separate
// kernels, extra copies for the 4-D attention matmuls, and additions that the GEMMs'
// accumulation does here for free. Everything is plain ATen, so reverse mode differentiates it
// (the linearized train step).
#pragma once

#include <cmath>
#include <utility>
#include <vector>

#include "../bmm.h"
#include "../common.h"
#include "../model.h"

namespace tangent {

using Dual = std::pair<at::Tensor, at::Tensor>;  // (primal, tangent); tangent undefined off the JVP

enum class Activation { Gelu, QuickGelu };

class DualPass {
 public:
  // `state` in the model's parameter order; `tangent` null for the plain forward, else one
  // (defined) tangent per parameter.
  DualPass(const std::vector<at::Tensor>& state, const std::vector<at::Tensor>* tangent)
      : s_(state), tan_(tangent) {}

  bool jvp() const { return tan_ != nullptr; }
  // Parameter k and its tangent.
  Dual param(size_t k) const { return {s_[k], jvp() ? (*tan_)[k] : at::Tensor()}; }

  // y = a Wᵀ + b on rows [M, K] (weight at k, bias at k + 1); ẏ = ȧ Wᵀ + a Ẇᵀ + ḃ.
  Dual linear(const Dual& a, size_t k) const {
    const at::Tensor &w = s_[k], &b = s_[k + 1];
    at::Tensor out = at::addmm(b, a.first, w.t());
    if (!jvp()) return {out, {}};
    // The second product accumulates in place (addmm would copy the first into a new output);
    // autograd allows it: addmm's backward does not read its `self`.
    return {out, at::addmm((*tan_)[k + 1], a.second, w.t()).addmm_(a.first, (*tan_)[k].t())};
  }

  // y = a P for a projection matrix P [K, N] without bias (CLIP's `proj`); ẏ = ȧ P + a Ṗ.
  Dual project(const Dual& a, size_t k) const {
    const at::Tensor& p = s_[k];
    at::Tensor out = at::mm(a.first, p);
    if (!jvp()) return {out, {}};
    return {out, at::mm(a.second, p).addmm_(a.first, (*tan_)[k])};
  }

  // LayerNorm over the last dim (weight at k, bias at k + 1): a = n ⊙ w + b with
  // n = (h − μ)·rstd; ṅ is LayerNorm's input gradient (its Jacobian is symmetric),
  // ȧ = ṅ ⊙ w + n ⊙ ẇ + ḃ.
  Dual layer_norm(const Dual& h, size_t k, double eps = 1e-5) const {
    const at::Tensor &w = s_[k], &b = s_[k + 1];
    const int64_t D = h.first.size(-1);
    auto r = at::native_layer_norm(h.first, {D}, w, b, eps);
    if (!jvp()) return {std::get<0>(r), {}};
    const at::Tensor& mean = std::get<1>(r);
    const at::Tensor& rstd = std::get<2>(r);
    at::Tensor n = (h.first - mean) * rstd;
    at::Tensor nt = std::get<0>(at::native_layer_norm_backward(h.second, h.first, {D}, mean, rstd, {}, {},
                                                                {true, false, false}));
    return {std::get<0>(r), at::addcmul(at::addcmul((*tan_)[k + 1], nt, w), n, (*tan_)[k])};
  }

  Dual activation(const Dual& u, Activation act) const {
    if (act == Activation::Gelu) {
      at::Tensor g = at::gelu(u.first);
      return {g, jvp() ? at::gelu_backward(u.second, u.first) : at::Tensor()};
    }
    // QuickGELU (CLIP's original): g = u·σ(1.702u); ġ = u̇·σ + u·σ(1 − σ)·1.702u̇.
    at::Tensor sg = at::sigmoid(u.first * 1.702);
    at::Tensor g = u.first * sg;
    if (!jvp()) return {g, {}};
    return {g, at::addcmul(u.second * sg, u.first, at::sigmoid_backward(u.second * 1.702, sg))};
  }

  // One residual block on h [B, T, D] with its 12 parameters from k, in this order:
  // ln1 (w, b), fused qkv projection (w [3D, D], b), attention output projection (w, b),
  // ln2 (w, b), MLP in (w, b), MLP out (w, b). `mask` (optional, [T, T]) is added to the
  // attention scores (CLIP's causal mask: −inf above the diagonal).
  Dual block(const Dual& h, size_t k, int64_t heads, Activation act, const at::Tensor& mask = {},
             double eps = 1e-5) const {
    const at::Tensor& x = h.first;
    const int64_t B = x.size(0), T = x.size(1), D = x.size(2), H = heads, hd = D / H;
    const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
    // [B, T, D] as the [B·T, D] rows a linear layer reads (an undefined tangent stays undefined).
    auto rows = [&](const Dual& t) -> Dual {
      return {t.first.view({B * T, D}), t.second.defined() ? t.second.view({B * T, D}) : t.second};
    };
    // Head `which` (0 q, 1 k, 2 v) of the fused projection [B·T, 3D] as [B, H, T, hd] matrices:
    // strided views that batched_matmul reads in place, no copies.
    auto head = [&](const at::Tensor& qkv, int64_t which) {
      return qkv.view({B, T, 3, H, hd}).select(2, which).permute({0, 2, 1, 3});
    };
    // Attention outputs [B, H, T, hd] are written as [B, T, H, hd]: the [B·T, D] rows the output
    // projection reads, so merging the heads is a view.
    const std::vector<int64_t> tokens_major{0, 2, 1, 3};
    auto merge_heads = [&](const at::Tensor& o) { return o.transpose(1, 2).reshape({B * T, D}); };
    auto residual = [&](const Dual& base, const Dual& add) -> Dual {
      return {base.first + add.first.view({B, T, D}),
              jvp() ? base.second + add.second.view({B, T, D}) : at::Tensor()};
    };

    Dual a = layer_norm(h, k, eps);
    Dual qkv = linear(rows(a), k + 2);
    const at::Tensor q = head(qkv.first, 0), kT = head(qkv.first, 1).transpose(-2, -1), v = head(qkv.first, 2);
    at::Tensor scores = batched_matmul({q, kT}, {}, scale);  // [B, H, T, T]
    if (mask.defined()) scores = scores + mask;
    at::Tensor att = at::softmax(scores, -1);
    Dual o{merge_heads(batched_matmul({att, v}, {}, 1, tokens_major)), {}};
    if (jvp()) {
      // Ṡ = (q̇kᵀ + qk̇ᵀ)·scale (the mask is constant); Ṗ = softmax's Jacobian applied to Ṡ;
      // Ȯ = Ṗv + Pv̇.
      const at::Tensor qt = head(qkv.second, 0), kTt = head(qkv.second, 1).transpose(-2, -1),
                       vt = head(qkv.second, 2);
      at::Tensor st = batched_matmul({qt, kT}, {q, kTt}, scale);
      at::Tensor pt = at::_softmax_backward_data(st, att, -1, att.scalar_type());
      o.second = merge_heads(batched_matmul({pt, v}, {att, vt}, 1, tokens_major));
    }
    Dual h1 = residual(h, linear(o, k + 4));
    Dual m = layer_norm(h1, k + 6, eps);
    Dual u = linear(rows(m), k + 8);
    Dual f = linear(activation(u, act), k + 10);
    return residual(h1, f);
  }

 private:
  const std::vector<at::Tensor>& s_;
  const std::vector<at::Tensor>* tan_;
};

// A model whose forward and hand-written JVP are one pass over (primal, tangent) pairs: `run`
// with a tangent-free DualPass is forward(), with every parameter's tangent (zeros where none was
// given) the JVP, its primal then bit for bit forward()'s.
class DualModel : public Model {
 public:
  at::Tensor forward(const std::vector<at::Tensor>& s, const at::Tensor& x) const final {
    return run(DualPass(s, nullptr), x).first;
  }

  bool tangent_forward(const std::vector<at::Tensor>& s, const std::vector<at::Tensor>& tangent,
                       const at::Tensor& x, at::Tensor& primal, at::Tensor& tangent_out) const final {
    std::vector<at::Tensor> v(num_parameters());
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = i < tangent.size() && tangent[i].defined() ? tangent[i] : at::zeros_like(s[i]);
    Dual y = run(DualPass(s, &v), x);
    primal = std::move(y.first);
    tangent_out = std::move(y.second);
    return true;
  }

 protected:
  virtual Dual run(const DualPass& p, const at::Tensor& x) const = 0;
};

}  // namespace tangent
