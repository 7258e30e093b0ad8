// nearswap (mergekit, after alchemonaut's QuartetAnemoi): entries of the model close to the base's
// are taken, farther ones moved a distance t towards it.
#include "method.h"

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

}  // namespace

Method nearswap_method() { return {{"nearswap", BaseUse::Required, 1, 1}, run_nearswap}; }

}  // namespace merge
}  // namespace tangent
