#include "../optim.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>

namespace tangent {
namespace {

constexpr int64_t kGrain = 16384;

void check_group(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& other,
                 const char* what) {
  check(other.size() == params.size(), ErrorKind::Argument, "adamw: ", other.size(), " ", what,
        " for ", params.size(), " parameters");
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    const auto& o = other[i];
    check(o.defined(), ErrorKind::Argument, "adamw: ", what, " ", i, " is undefined");
    check(o.sizes() == p.sizes(), ErrorKind::Shape, "adamw: ", what, " ", i, " has shape ",
          shape_str(o.sizes()), ", parameter has ", shape_str(p.sizes()));
    check(o.scalar_type() == p.scalar_type(), ErrorKind::DType, "adamw: ", what, " ", i,
          " has dtype ", c10::toString(o.scalar_type()), ", parameter has ",
          c10::toString(p.scalar_type()));
    check(o.device() == p.device(), ErrorKind::Device, "adamw: ", what, " ", i, " is on ",
          o.device().str(), ", parameter is on ", p.device().str());
  }
}

template <typename T>
void adamw_kernel(T* p, T* m, T* v, const T* g, int64_t n, double lr, double b1, double b2,
                  double eps, double wd, double clip, double bc1, double bc2_sqrt) {
  // Arithmetic in the parameter dtype, in the order torch.optim.AdamW's single-tensor path uses.
  const T decay = static_cast<T>(1.0 - lr * wd);
  const T beta1 = static_cast<T>(b1), beta2 = static_cast<T>(b2);
  const T omb1 = static_cast<T>(1.0 - b1), omb2 = static_cast<T>(1.0 - b2);
  const T step_size = static_cast<T>(lr / bc1);
  const T bc2s = static_cast<T>(bc2_sqrt);
  const T e = static_cast<T>(eps);
  const T c = static_cast<T>(clip);
  const bool clipped = clip != 1.0;
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T gi = clipped ? g[i] * c : g[i];
      p[i] *= decay;
      m[i] = beta1 * m[i] + omb1 * gi;
      v[i] = beta2 * v[i] + omb2 * gi * gi;
      const T denom = std::sqrt(v[i]) / bc2s + e;
      p[i] -= step_size * (m[i] / denom);
    }
  });
}

}  // namespace

double global_norm(const std::vector<at::Tensor>& tensors) {
  compat::NoGradGuard no_grad;
  double sq = 0;
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    sq += t.to(at::kDouble).pow(2).sum().item<double>();
  }
  return std::sqrt(sq);
}

AdamWResult adamw_step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& exp_avg,
                       const std::vector<at::Tensor>& exp_avg_sq, const std::vector<at::Tensor>& grads,
                       const AdamWOptions& o) {
  check_group(params, exp_avg, "exp_avg tensors");
  check_group(params, exp_avg_sq, "exp_avg_sq tensors");
  check_group(params, grads, "gradients");
  check(std::isfinite(o.lr) && o.lr >= 0, ErrorKind::Argument, "adamw: lr must be finite and >= 0, got ", o.lr);
  check(o.beta1 >= 0 && o.beta1 < 1, ErrorKind::Argument, "adamw: beta1 must lie in [0, 1), got ", o.beta1);
  check(o.beta2 >= 0 && o.beta2 < 1, ErrorKind::Argument, "adamw: beta2 must lie in [0, 1), got ", o.beta2);
  check(o.eps > 0, ErrorKind::Argument, "adamw: eps must be > 0, got ", o.eps);
  check(o.weight_decay >= 0, ErrorKind::Argument, "adamw: weight decay must be >= 0, got ", o.weight_decay);
  check(o.step >= 1, ErrorKind::Argument, "adamw: step must be >= 1, got ", o.step);
  for (size_t i = 0; i < params.size(); ++i) {
    check(params[i].scalar_type() == at::kFloat || params[i].scalar_type() == at::kDouble,
          ErrorKind::DType, "adamw: parameter ", i, " must be float32 or float64, got ",
          c10::toString(params[i].scalar_type()));
    check(params[i].is_contiguous() && exp_avg[i].is_contiguous() && exp_avg_sq[i].is_contiguous(),
          ErrorKind::Argument, "adamw: parameter ", i, " and its moments must be contiguous");
  }
  compat::NoGradGuard no_grad;
  AdamWResult r;
  r.grad_norm = global_norm(grads);
  check(std::isfinite(r.grad_norm), ErrorKind::Argument,
        "adamw: the gradients hold NaN or infinite values (global norm ", r.grad_norm, ")");
  if (o.max_grad_norm > 0) {
    const double coef = o.max_grad_norm / (r.grad_norm + 1e-6);
    if (coef < 1) r.clip_coef = coef;
  }
  const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(o.step));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(o.beta2, static_cast<double>(o.step)));
  for (size_t i = 0; i < params.size(); ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& m = exp_avg[i];
    const at::Tensor& v = exp_avg_sq[i];
    if (p.is_cpu()) {
      const at::Tensor g = grads[i].contiguous();
      AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "adamw_step", [&] {
        adamw_kernel<scalar_t>(p.data_ptr<scalar_t>(), m.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                               g.data_ptr<scalar_t>(), p.numel(), o.lr, o.beta1, o.beta2, o.eps,
                               o.weight_decay, r.clip_coef, bc1, bc2_sqrt);
      });
    } else {
      at::Tensor g = r.clip_coef != 1.0 ? grads[i] * r.clip_coef : grads[i];
      at::Tensor pm = p, mm = m, vm = v;
      pm.mul_(1.0 - o.lr * o.weight_decay);
      mm.mul_(o.beta1).add_(g, 1.0 - o.beta1);
      vm.mul_(o.beta2).addcmul_(g, g, 1.0 - o.beta2);
      at::Tensor denom = (vm.sqrt() / bc2_sqrt).add_(o.eps);
      pm.addcdiv_(mm, denom, -o.lr / bc1);
    }
  }
  return r;
}

}  // namespace tangent
