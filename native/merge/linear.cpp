// linear (model soups, Wortsman et al. 2022): the weighted sum of the models, divided by Σ w_k with
// normalize. No base: every input is a model.
#include "method.h"

namespace tangent {
namespace merge {
namespace {

at::Tensor run_linear(const Context& c) {
  at::Tensor out = at::zeros_like(c.models[0]);
  double wsum = 0;
  for (size_t k = 0; k < c.count(); ++k) {
    out.add_(c.models[k], c.weight(k));
    wsum += c.weight(k);
  }
  // lib/merge refuses normalize with weights summing to 0 before any tensor is read.
  return c.spec.normalize ? out / wsum : out;
}

}  // namespace

Method linear_method() { return {{"linear", BaseUse::None, 1, 0}, run_linear}; }

}  // namespace merge
}  // namespace tangent
