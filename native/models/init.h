// Seeded parameter initialisation shared by the built-in models. Values are drawn in float64 on
// the CPU and then cast, so one seed gives the same model in every dtype and on every device.
#pragma once

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace tangent {

struct Init {
  Init(uint64_t seed, at::ScalarType dtype, at::Device device)
      : gen(at::detail::createCPUGenerator(seed)), dtype(dtype), device(device) {}

  at::Tensor uniform(at::IntArrayRef shape, double bound) {
    return at::empty(shape, at::kDouble).uniform_(-bound, bound, gen).to(device, dtype);
  }
  at::Tensor normal(at::IntArrayRef shape, double std) {
    return at::empty(shape, at::kDouble).normal_(0.0, std, gen).to(device, dtype);
  }
  at::Tensor fill(at::IntArrayRef shape, double v) {
    return at::full(shape, v, at::TensorOptions().dtype(dtype).device(device));
  }
  // PyTorch's default for nn.Linear / nn.Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  at::Tensor fan_in_uniform(at::IntArrayRef shape, int64_t fan_in) {
    return uniform(shape, 1.0 / std::sqrt(static_cast<double>(fan_in)));
  }

  at::Generator gen;
  at::ScalarType dtype;
  at::Device device;
};

at::Tensor activation(const std::string& name, const at::Tensor& x);

}  // namespace tangent
