// nearswap (mergekit, after alchemonaut's QuartetAnemoi): entries of the model close to the base's
// are taken, farther ones moved a distance t towards it.
#include "stream.h"

#include <atomic>

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
  std::atomic<bool> bad{false};
  src.chunks(args.spec.compute, [&](int64_t, int64_t start, int64_t len, const void* const* xs) {
    thread_local std::vector<Acc> res;
    thread_local std::vector<double> obuf;
    if (res.size() < static_cast<size_t>(len)) res.resize(static_cast<size_t>(len)), obuf.resize(static_cast<size_t>(len));
    const Acc* x0 = static_cast<const Acc*>(xs[0]);
    const Acc* x1 = static_cast<const Acc*>(xs[1]);
    for (int64_t j = 0; j < len; ++j) {
      const Acc d = x1[j] - x0[j], a = std::abs(d);
      const Acc w = a == 0 ? Acc(1) : std::min(Acc(1), std::max(Acc(0), t / a));
      res[static_cast<size_t>(j)] = x0[j] + w * d;
    }
    if (convert_out(args.spec.compute, res.data(), sink.dtype(), obuf.data(), len)) bad = true;
    sink.write(start, len, obuf.data());
  });
  return bad;
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
