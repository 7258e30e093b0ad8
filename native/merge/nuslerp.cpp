// nuslerp: SLERP between two models with the factor from their weights, t = w_1/(w_0 + w_1), of the
// whole tensors or of each row or column; with a base, between their task vectors.
#include "stream.h"

#include <cmath>

namespace tangent {
namespace merge {
namespace {

// Row by row of [R, D] matrices: û = v/max(‖v‖, 1e-7), θ = arccos clamp(⟨û0, û1⟩, −1, 1),
// (sin((1 − t)θ) v0 + sin(tθ) v1)/sin θ; linear where |sin θ| < 1e-8 (parallel, antiparallel) or a
// row has norm ≤ 1e-7 (no direction). Cosines in float64.
at::Tensor slerp_rows(const at::Tensor& v0, const at::Tensor& v1, double t) {
  const at::Tensor a = v0.to(at::kDouble), b = v1.to(at::kDouble);
  const at::Tensor na = a.norm(2, {1}, true), nb = b.norm(2, {1}, true);
  const at::Tensor cs = ((a / na.clamp_min(1e-7)) * (b / nb.clamp_min(1e-7))).sum(1, true).clamp(-1.0, 1.0);
  const at::Tensor th = at::acos(cs), s = at::sin(th);
  const at::Tensor linear = (s.abs() < 1e-8).logical_or(na <= 1e-7).logical_or(nb <= 1e-7);
  const at::Tensor safe = at::where(linear, at::ones_like(s), s);
  const at::Tensor c0 = at::where(linear, at::full_like(s, 1.0 - t), at::sin(th * (1.0 - t)) / safe);
  const at::Tensor c1 = at::where(linear, at::full_like(s, t), at::sin(th * t) / safe);
  return (a * c0 + b * c1).to(v0.scalar_type());
}

// Whole tensors (nuslerp_flatten, or a tensor of one dimension): a combination of the inputs, from
// the Gram. With a base, θ0 + c0 τ0 + c1 τ1.
std::vector<double> nuslerp_coefficients(const Args& a, const Gram& g) {
  const double w0 = a.weight(0), w1 = a.weight(1);
  const double t = std::abs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
  const double na = std::sqrt(std::max(0.0, g.model(0, 0))), nb = std::sqrt(std::max(0.0, g.model(1, 1)));
  const double cs = std::max(-1.0, std::min(1.0, g.model(0, 1) / (std::max(na, 1e-7) * std::max(nb, 1e-7))));
  const double th = std::acos(cs), s = std::sin(th);
  const bool linear = std::abs(s) < 1e-8 || na <= 1e-7 || nb <= 1e-7;
  const double c0 = linear ? 1.0 - t : std::sin((1.0 - t) * th) / s;
  const double c1 = linear ? t : std::sin(t * th) / s;
  if (a.has_base) return {1.0 - c0 - c1, c0, c1};
  return {c0, c1};
}

// Columns (nuslerp_row_wise) are merged whole; rows stream over chunks of whole rows.
bool nuslerp_whole(const MergeSpec& spec, int64_t dim) { return !spec.flatten && dim >= 2 && spec.row_wise; }

// Rows (W[i, :], the slices along the last dimension), streamed: chunks of whole rows, each row's
// norms and dot product in float64 (as slerp_rows), then its two coefficients applied in float64
// and the result rounded to the compute dtype (+ θ0 in it), as the whole-tensor form.
template <typename Acc>
bool nuslerp_rows_t(const Args& a, const ChunkSource& src, const ChunkSink& sink) {
  const double w0 = a.weight(0), w1 = a.weight(1);
  const double t = std::abs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
  const int64_t row = a.shape.empty() ? 1 : std::max<int64_t>(1, a.shape.back());
  const int64_t chunk = row * std::max<int64_t>(1, kChunk / row);
  const bool hb = a.has_base;
  return stream_out<Acc>(src, a.spec.compute, sink, [&](int64_t, int64_t, int64_t len, const Acc* const* xs, Acc* res) {
    const Acc* x0 = xs[0];
    const Acc* x1 = xs[1];
    const Acc* x2 = hb ? xs[2] : nullptr;
    auto va = [&](int64_t j) { return static_cast<double>(hb ? x1[j] - x0[j] : x0[j]); };
    auto vb = [&](int64_t j) { return static_cast<double>(hb ? x2[j] - x0[j] : x1[j]); };
    for (int64_t r0 = 0; r0 < len; r0 += row) {
      double aa = 0, bb = 0, ab = 0;
      for (int64_t j = r0; j < r0 + row; ++j) {
        const double p = va(j), q = vb(j);
        aa += p * p, bb += q * q, ab += p * q;
      }
      const double na = std::sqrt(aa), nb = std::sqrt(bb);
      const double cs = std::max(-1.0, std::min(1.0, ab / (std::max(na, 1e-7) * std::max(nb, 1e-7))));
      const double th = std::acos(cs), s = std::sin(th);
      const bool linear = std::abs(s) < 1e-8 || na <= 1e-7 || nb <= 1e-7;
      const double c0 = linear ? 1.0 - t : std::sin(th * (1.0 - t)) / s, c1 = linear ? t : std::sin(th * t) / s;
      for (int64_t j = r0; j < r0 + row; ++j) {
        const Acc o = static_cast<Acc>(va(j) * c0 + vb(j) * c1);
        res[j] = hb ? x0[j] + o : o;
      }
    }
  }, chunk);
}

bool stream_nuslerp(const Args& a, const ChunkSource& src, const ChunkSink& sink) {
  if (a.spec.flatten || a.shape.size() < 2) return stream_combination(a, src, sink);
  return a.spec.compute == at::kDouble ? nuslerp_rows_t<double>(a, src, sink) : nuslerp_rows_t<float>(a, src, sink);
}

at::Tensor run_nuslerp(const Context& c) {
  check(c.count() == 2, ErrorKind::Argument, "merge: nuslerp interpolates between exactly two models, got ", c.count());
  if (c.spec.flatten || c.models[0].dim() < 2) return run_combination(c);
  const double w0 = c.weight(0), w1 = c.weight(1);
  const double t = std::abs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1);
  const bool has_base = c.base.defined();
  at::Tensor v0 = has_base ? c.models[0] - c.base : c.models[0];
  at::Tensor v1 = has_base ? c.models[1] - c.base : c.models[1];
  at::Tensor out;
  if (c.spec.row_wise) {
    // Slices along dim 0 (for [out, in]: each column W[:, j]), as mergekit's nuslerp_row_wise.
    const at::Tensor a = v0.transpose(0, -1).contiguous(), b = v1.transpose(0, -1).contiguous();
    const auto tsizes = a.sizes().vec();
    out = slerp_rows(a.reshape({-1, a.size(-1)}), b.reshape({-1, b.size(-1)}), t).reshape(tsizes).transpose(0, -1).contiguous();
  } else {
    out = slerp_rows(v0.reshape({-1, v0.size(-1)}), v1.reshape({-1, v1.size(-1)}), t).reshape(v0.sizes());
  }
  return has_base ? c.base + out : out;
}

}  // namespace

Method nuslerp_method() {
  Method m{{"nuslerp", BaseUse::Optional, 2, 2}, run_nuslerp, false, nuslerp_coefficients, true, stream_nuslerp};
  m.whole = nuslerp_whole;
  return m;
}

}  // namespace merge
}  // namespace tangent
