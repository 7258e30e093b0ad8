// linear (model soups, Wortsman et al. 2022): the weighted sum of the models, divided by Σ w_k with
// normalize. No base: every input is a model.
#include "method.h"

namespace tangent {
namespace merge {
namespace {

// lib/merge refuses normalize with weights summing to 0 before any tensor is read.
std::vector<double> linear_coefficients(const Args& a, const Gram&) {
  double wsum = 0;
  for (size_t k = 0; k < a.count(); ++k) wsum += a.weight(k);
  std::vector<double> c;
  for (size_t k = 0; k < a.count(); ++k) c.push_back(a.spec.normalize ? a.weight(k) / wsum : a.weight(k));
  return c;
}

}  // namespace

Method linear_method() {
  Method m{{"linear", BaseUse::None, 1, 0}, run_combination, false, linear_coefficients};
  m.uses_gram = false;
  return m;
}

}  // namespace merge
}  // namespace tangent
