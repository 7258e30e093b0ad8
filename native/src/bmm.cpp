#include "../bmm.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/csrc/autograd/custom_function.h>

#include <limits>

namespace tangent {
namespace {

// Fortran BLAS, column-major: C = alpha op(A) op(B) + beta C.
template <typename T>
using GemmFn = void (*)(const char*, const char*, const int*, const int*, const int*, const T*, const T*,
                        const int*, const T*, const int*, const T*, T*, const int*);

struct Blas {
  GemmFn<float> sgemm = reinterpret_cast<GemmFn<float>>(dlsym(RTLD_DEFAULT, "sgemm_"));
  GemmFn<double> dgemm = reinterpret_cast<GemmFn<double>>(dlsym(RTLD_DEFAULT, "dgemm_"));
};

const Blas& blas() {
  static const Blas b;
  return b;
}

// Above this many multiply-adds per matrix a BLAS may thread a call itself (OpenBLAS's default
// threshold), which must not happen inside libtorch's parallel region.
constexpr int64_t kMaxWork = 4 * 65536;

// A [rows, cols] matrix with strides (s0, s1) in column-major BLAS terms, as the operand the
// row-major product needs (C = A·B is computed as Cᵀ = Bᵀ·Aᵀ): its trans flag and leading dim.
struct Operand {
  char trans = 'N';
  int ld = 1;
};

bool as_operand(int64_t rows, int64_t cols, int64_t s0, int64_t s1, Operand& o) {
  const int64_t lim = std::numeric_limits<int>::max();
  if ((s1 == 1 || cols == 1) && s0 >= std::max<int64_t>(1, cols) && s0 <= lim) {
    o = {'N', static_cast<int>(s0)};
    return true;
  }
  if ((s0 == 1 || rows == 1) && s1 >= std::max<int64_t>(1, rows) && s1 <= lim) {
    o = {'T', static_cast<int>(s1)};
    return true;
  }
  return false;
}

bool empty(const MatmulTerm& t) { return !t.first.defined(); }

std::vector<int64_t> batch_sizes(const at::Tensor& t) { return t.sizes().slice(0, t.dim() - 2).vec(); }

void check_terms(const MatmulTerm& t1, const MatmulTerm& t2) {
  for (const MatmulTerm* t : {&t1, &t2}) {
    if (empty(*t)) continue;
    const auto& a = t->first;
    const auto& b = t->second;
    check(a.dim() >= 3 && a.dim() <= 4 && b.dim() == a.dim() && batch_sizes(a) == batch_sizes(b) &&
              a.size(-1) == b.size(-2),
          ErrorKind::Shape, "batched_matmul: cannot multiply ", shape_str(a.sizes()), " by ",
          shape_str(b.sizes()));
  }
  check(!empty(t1), ErrorKind::Argument, "batched_matmul: no first term");
  if (!empty(t2))
    check(batch_sizes(t2.first) == batch_sizes(t1.first) && t2.first.size(-2) == t1.first.size(-2) &&
              t2.second.size(-1) == t1.second.size(-1),
          ErrorKind::Shape, "batched_matmul: terms of different shapes, ", shape_str(t1.first.sizes()),
          "·", shape_str(t1.second.sizes()), " and ", shape_str(t2.first.sizes()), "·",
          shape_str(t2.second.sizes()));
}

// A dual tensor of forward-mode AD (libtorch runs one level at a time: index 0).
bool is_dual(const at::Tensor& t) { return t._fw_grad(0).defined(); }

bool blas_path(const MatmulTerm& t1, const MatmulTerm& t2) {
  const auto st = t1.first.scalar_type();
  if (!((st == at::kFloat && blas().sgemm) || (st == at::kDouble && blas().dgemm))) return false;
  for (const MatmulTerm* t : {&t1, &t2}) {
    if (empty(*t)) continue;
    for (const at::Tensor* x : {&t->first, &t->second})
      if (!x->device().is_cpu() || x->scalar_type() != st || is_dual(*x)) return false;
    const int64_t m = t->first.size(-2), k = t->first.size(-1), p = t->second.size(-1);
    if (m * k * p > kMaxWork || t->first.numel() == 0 || t->second.numel() == 0) return false;
  }
  return true;
}

at::Tensor new_output(const at::Tensor& like, at::IntArrayRef sizes, const std::vector<int64_t>& order) {
  if (order.empty()) return at::empty(sizes, like.options());
  std::vector<int64_t> stored(order.size()), inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    stored[i] = sizes[order[i]];
    inverse[order[i]] = static_cast<int64_t>(i);
  }
  return at::empty(stored, like.options()).permute(inverse);
}

// Element offsets of each matrix of `t` (batch dims flattened in order).
std::vector<int64_t> offsets(const at::Tensor& t) {
  const int64_t nb = t.dim() - 2;
  int64_t n = 1;
  for (int64_t d = 0; d < nb; ++d) n *= t.size(d);
  std::vector<int64_t> off(n);
  for (int64_t i = 0; i < n; ++i) {
    int64_t rem = i, o = 0;
    for (int64_t d = nb - 1; d >= 0; --d) {
      o += (rem % t.size(d)) * t.stride(d);
      rem /= t.size(d);
    }
    off[i] = o;
  }
  return off;
}

template <typename T>
void gemm_loop(GemmFn<T> gemm, const MatmulTerm& t1, const MatmulTerm& t2, double alpha, at::Tensor& out) {
  struct Prepared {
    at::Tensor a, b;
    Operand oa, ob;
    std::vector<int64_t> offa, offb;
    const T* pa = nullptr;
    const T* pb = nullptr;
    int k = 0;
  };
  std::vector<Prepared> terms;
  for (const MatmulTerm* t : {&t1, &t2}) {
    if (empty(*t)) continue;
    Prepared p{t->first, t->second};
    const int64_t m = p.a.size(-2), k = p.a.size(-1), n = p.b.size(-1);
    if (!as_operand(m, k, p.a.stride(-2), p.a.stride(-1), p.oa)) {
      p.a = p.a.contiguous();
      as_operand(m, k, p.a.stride(-2), p.a.stride(-1), p.oa);
    }
    if (!as_operand(k, n, p.b.stride(-2), p.b.stride(-1), p.ob)) {
      p.b = p.b.contiguous();
      as_operand(k, n, p.b.stride(-2), p.b.stride(-1), p.ob);
    }
    p.offa = offsets(p.a);
    p.offb = offsets(p.b);
    p.k = static_cast<int>(k);
    p.pa = p.a.template data_ptr<T>();
    p.pb = p.b.template data_ptr<T>();
    terms.push_back(std::move(p));
  }
  Operand oc;
  const int64_t m = out.size(-2), n = out.size(-1);
  check(as_operand(m, n, out.stride(-2), out.stride(-1), oc) && oc.trans == 'N', ErrorKind::State,
        "batched_matmul: output layout is not row-major");
  const std::vector<int64_t> offc = offsets(out);
  T* pc = out.template data_ptr<T>();
  const int M = static_cast<int>(m), N = static_cast<int>(n);
  const T al = static_cast<T>(alpha), zero = 0, one = 1;
  int64_t work = 0;
  for (const auto& p : terms) work += m * p.k * n;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work));
  at::parallel_for(0, static_cast<int64_t>(offc.size()), grain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      for (size_t j = 0; j < terms.size(); ++j) {
        const auto& p = terms[j];
        gemm(&p.ob.trans, &p.oa.trans, &N, &M, &p.k, &al, p.pb + p.offb[i], &p.ob.ld, p.pa + p.offa[i], &p.oa.ld, j == 0 ? &zero : &one, pc + offc[i], &oc.ld);
      }
  });
}

at::Tensor product(const MatmulTerm& t1, const MatmulTerm& t2, double alpha, const std::vector<int64_t>& order) {
  auto sizes = t1.first.sizes().vec();
  sizes.back() = t1.second.size(-1);
  at::Tensor out = new_output(t1.first, sizes, order);
  if (t1.first.scalar_type() == at::kFloat)
    gemm_loop<float>(blas().sgemm, t1, t2, alpha, out);
  else
    gemm_loop<double>(blas().dgemm, t1, t2, alpha, out);
  return out;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ∂/∂a = alpha · g·bᵀ and ∂/∂b = alpha · aᵀ·g for each term, again batched products.
void term_grads(AutogradContext* ctx, const at::Tensor& g, const at::Tensor& a, const at::Tensor& b,
                size_t ia, double alpha, variable_list& out) {
  if (ctx->needs_input_grad(ia)) out[ia] = batched_matmul({g, b.transpose(-2, -1)}, {}, alpha);
  if (ctx->needs_input_grad(ia + 1)) out[ia + 1] = batched_matmul({a.transpose(-2, -1), g}, {}, alpha);
}

// One term and two (an autograd Function takes no undefined inputs).
class Product1 : public torch::autograd::Function<Product1> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a, const at::Tensor& b, double alpha,
                            std::vector<int64_t> order) {
    ctx->save_for_backward({a, b});
    ctx->saved_data["alpha"] = alpha;
    return product({a, b}, {}, alpha, order);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    variable_list out(4);
    term_grads(ctx, grads[0], s[0], s[1], 0, ctx->saved_data["alpha"].toDouble(), out);
    return out;
  }
};

class Product2 : public torch::autograd::Function<Product2> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& a1, const at::Tensor& b1,
                            const at::Tensor& a2, const at::Tensor& b2, double alpha, std::vector<int64_t> order) {
    ctx->save_for_backward({a1, b1, a2, b2});
    ctx->saved_data["alpha"] = alpha;
    return product({a1, b1}, {a2, b2}, alpha, order);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const double alpha = ctx->saved_data["alpha"].toDouble();
    variable_list out(6);
    term_grads(ctx, grads[0], s[0], s[1], 0, alpha, out);
    term_grads(ctx, grads[0], s[2], s[3], 2, alpha, out);
    return out;
  }
};

bool requires_grad(const MatmulTerm& t) {
  return !empty(t) && (t.first.requires_grad() || t.second.requires_grad());
}

}  // namespace

at::Tensor batched_matmul(const MatmulTerm& t1, const MatmulTerm& t2, double alpha, std::vector<int64_t> out_order) {
  check_terms(t1, t2);
  check(out_order.empty() || out_order.size() == static_cast<size_t>(t1.first.dim()), ErrorKind::Argument,
        "batched_matmul: out_order has ", out_order.size(), " dims, the product ", t1.first.dim());
  if (!blas_path(t1, t2)) {
    at::Tensor r = at::matmul(t1.first, t1.second);
    if (!empty(t2)) r = r + at::matmul(t2.first, t2.second);
    return alpha == 1 ? r : r * alpha;
  }
  if (!at::GradMode::is_enabled() || !(requires_grad(t1) || requires_grad(t2)))
    return product(t1, t2, alpha, out_order);
  if (empty(t2)) return Product1::apply(t1.first, t1.second, alpha, out_order);
  return Product2::apply(t1.first, t1.second, t2.first, t2.second, alpha, out_order);
}

}  // namespace tangent
