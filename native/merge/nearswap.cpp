// nearswap (mergekit, after alchemonaut's QuartetAnemoi): entries of the model close to the base's
// are taken, farther ones moved a distance t towards it.
#include "stream.h"

namespace tangent {
namespace merge {
namespace {

// w = clamp(t / |v1 − v0|, 0, 1) (1 where the entries are equal), v0 + w (v1 − v0).
at::Tensor run_nearswap(const Context& c) {
  const at::Tensor& v0 = c.base;
  const at::Tensor d = c.models[0] - v0;
  const at::Tensor a = d.abs();
  const at::Tensor w = at::where(a == 0, at::ones_like(a), (c.spec.t / a).clamp(0.0, 1.0));
  return v0 + w * d;
}

// The same entry by entry, in one pass.
template <typename Acc>
bool stream_nearswap_t(const Args& args, const ChunkSource& src, const ChunkSink& sink) {
  const Acc t = static_cast<Acc>(args.spec.t);
  return stream_out<Acc>(src, args.spec.compute, sink, [&](int64_t, int64_t, int64_t len, const Acc* const* x, Acc* res) {
    for (int64_t j = 0; j < len; ++j) {
      const Acc d = x[1][j] - x[0][j], a = std::abs(d);
      const Acc w = a == 0 ? Acc(1) : std::min(Acc(1), std::max(Acc(0), t / a));
      res[j] = x[0][j] + w * d;
    }
  });
}

bool stream_nearswap(const Args& a, const ChunkSource& s, const ChunkSink& o) {
  return a.spec.compute == at::kDouble ? stream_nearswap_t<double>(a, s, o) : stream_nearswap_t<float>(a, s, o);
}

}  // namespace

Method nearswap_method() {
  return {{"nearswap", BaseUse::Required, 1, 1}, run_nearswap, false, nullptr, true, stream_nearswap};
}

}  // namespace merge
}  // namespace tangent
