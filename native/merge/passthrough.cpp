// passthrough: one model's tensor as it is, times `scale` (frankenmerges copy layers with it).
#include "method.h"

namespace tangent {
namespace merge {
namespace {

at::Tensor run_passthrough(const Context& c) { return c.spec.scale == 1.0 ? c.models[0] : c.models[0] * c.spec.scale; }

}  // namespace

Method passthrough_method() { return {{"passthrough", BaseUse::None, 1, 1}, run_passthrough}; }

}  // namespace merge
}  // namespace tangent
