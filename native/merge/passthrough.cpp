// passthrough: one model's tensor as it is, times `scale` (frankenmerges copy layers with it).
#include "method.h"

namespace tangent {
namespace merge {
namespace {

std::vector<double> passthrough_coefficients(const Args& a, const Gram&) { return {a.spec.scale}; }

}  // namespace

Method passthrough_method() {
  Method m{{"passthrough", BaseUse::None, 1, 1}, run_combination, false, passthrough_coefficients};
  m.uses_gram = false;
  return m;
}

}  // namespace merge
}  // namespace tangent
