#include "../ntk.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace tangent {
namespace {

// Per-sample Jacobian rows: a batch-1 forward per sample, then one backward pass per requested
// output (the graph retained between them), each gradient flattened into a row of J.
class RowFiller {
 public:
  RowFiller(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state, at::ScalarType dtype,
            int64_t workers)
      : m_(m), x_(x), dtype_(dtype), workers_(workers) {
    const size_t np = m.num_parameters();
    leaves_.resize(state.size());
    for (size_t i = 0; i < state.size(); ++i) {
      leaves_[i] = i < np ? state[i].detach().requires_grad_(true) : state[i];
      if (i < np) {
        inputs_.push_back(leaves_[i]);
        offsets_.push_back(params_);
        params_ += state[i].numel();
      }
    }
  }

  int64_t params() const { return params_; }

  at::TensorOptions options() const { return x_.options().dtype(dtype_); }

  // J[g][r] = ∇θ f_{outs[g]}(x[s0 + r]) for r in [0, s1 − s0); J is [outs.size(), s1 − s0, P].
  // Batch-1 work hardly uses intra-op threads, so samples are split over `workers_` threads, each
  // running its own forwards and backward passes (libtorch's autograd is thread-safe; on CPU a
  // backward pass runs on the calling thread) and writing its own rows of J.
  void fill(int64_t s0, int64_t s1, const std::vector<int64_t>& outs, at::Tensor& J) {
    const int64_t n = s1 - s0;
    const int64_t w = std::max<int64_t>(1, std::min<int64_t>(workers_, n));
    if (w == 1) {
      fill_range(s0, s1, s0, outs, J);
      return;
    }
    std::vector<std::thread> threads;
    std::vector<std::exception_ptr> errors(w);
    for (int64_t k = 0; k < w; ++k) {
      const int64_t a = s0 + n * k / w, b = s0 + n * (k + 1) / w;
      threads.emplace_back([this, a, b, s0, &outs, &J, &errors, k] {
        try {
          torch::autograd::AutoGradMode grad_mode(true);
          // One intra-op thread per worker: OpenMP teams inside each worker would oversubscribe.
          at::internal::lazy_init_num_threads();
#ifdef _OPENMP
          omp_set_num_threads(1);
#endif
          fill_range(a, b, s0, outs, J);
        } catch (...) {
          errors[k] = std::current_exception();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
  }

  std::atomic<int64_t> forwards{0};
  std::atomic<int64_t> backwards{0};

 private:
  void fill_range(int64_t a, int64_t b, int64_t s0, const std::vector<int64_t>& outs, at::Tensor& J) {
    for (int64_t s = a; s < b; ++s) {
      at::Tensor out = m_.forward(leaves_, x_.narrow(0, s, 1)).reshape({-1});
      ++forwards;
      for (size_t g = 0; g < outs.size(); ++g) {
        at::Tensor row = J.select(0, static_cast<int64_t>(g)).select(0, s - s0);
        ++backwards;
        if (!out.requires_grad()) {  // output independent of θ
          row.zero_();
          continue;
        }
        auto grads = torch::autograd::grad({out.select(0, outs[g])}, inputs_, {},
                                           /*retain_graph=*/g + 1 < outs.size(),
                                           /*create_graph=*/false, /*allow_unused=*/true);
        for (size_t i = 0; i < inputs_.size(); ++i) {
          at::Tensor dst = row.narrow(0, offsets_[i], inputs_[i].numel());
          if (grads[i].defined())
            dst.copy_(grads[i].reshape({-1}));
          else
            dst.zero_();
        }
      }
    }
  }

  const Model& m_;
  const at::Tensor& x_;
  at::ScalarType dtype_;
  int64_t workers_;
  std::vector<at::Tensor> leaves_, inputs_;
  std::vector<int64_t> offsets_;
  int64_t params_ = 0;
};

}  // namespace

NtkResult empirical_ntk(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state,
                        const NtkOptions& opts) {
  m.check_input(x);
  check(x.dim() >= 1 && x.size(0) >= 1, ErrorKind::Shape, "ntk: needs at least one input, got shape ",
        shape_str(x.sizes()));
  check(opts.jacobian_dtype == at::kFloat || opts.jacobian_dtype == at::kDouble, ErrorKind::DType,
        "ntk: Jacobian dtype must be float32 or float64, got ", c10::toString(opts.jacobian_dtype));
  check(state.size() >= m.num_parameters(), ErrorKind::Parameter, "ntk: state has ", state.size(),
        " entries, model has ", m.num_parameters(), " parameters");
  const int64_t N = x.size(0);

  int64_t C = 0;
  {
    compat::NoGradGuard no_grad;
    C = m.forward(state, x.narrow(0, 0, 1)).numel();
  }
  check(C >= 1, ErrorKind::Shape, "ntk: the model has no outputs");
  check(opts.output >= -1 && opts.output < C, ErrorKind::Argument, "ntk: output index ", opts.output,
        " out of range for a model with ", C, " outputs (use -1 for the trace kernel)");
  std::vector<int64_t> outs;
  if (opts.output < 0)
    for (int64_t c = 0; c < C; ++c) outs.push_back(c);
  else
    outs.push_back(opts.output);
  const int64_t nout = static_cast<int64_t>(outs.size());

  torch::autograd::AutoGradMode grad_mode(true);
  const int64_t workers = std::max<int64_t>(1, opts.workers);
  RowFiller rows(m, x, state, opts.jacobian_dtype, workers);
  const int64_t P = rows.params();
  check(P >= 1, ErrorKind::Parameter, "ntk: the model has no trainable parameters");
  const int64_t elem = opts.jacobian_dtype == at::kDouble ? 8 : 4;
  const int64_t row_bytes = P * elem;
  // The Gram matrix and one N×N temporary (a product block before it is added in float64).
  const int64_t gram_bytes = N * N * (8 + elem);
  const int64_t budget = opts.max_memory_bytes - gram_bytes;
  const int64_t cap = budget > 0 ? budget / row_bytes : 0;
  check(cap >= 2, ErrorKind::Argument, "ntk: maxMemoryBytes ", opts.max_memory_bytes,
        " is too small: the ", N, "×", N, " Gram matrix and a temporary take ", gram_bytes,
        " bytes, and at least two Jacobian rows of ", P, " parameters (", 2 * row_bytes,
        " bytes) must fit besides");

  NtkResult r;
  r.outputs = C;
  r.params = P;
  r.jacobian_rows = N * nout;
  r.capacity_rows = cap;
  at::Tensor K = at::zeros({N, N}, x.options().dtype(at::kDouble));

  if (N <= cap) {
    // Groups of outputs, every sample at once: one forward per sample and group.
    const int64_t G = std::min(nout, cap / N);
    r.strategy = G == nout ? "full" : "grouped";
    for (int64_t g0 = 0; g0 < nout; g0 += G) {
      const int64_t g1 = std::min(nout, g0 + G);
      std::vector<int64_t> group(outs.begin() + g0, outs.begin() + g1);
      at::Tensor J = at::empty({g1 - g0, N, P}, rows.options());
      r.peak_jacobian_bytes = std::max<int64_t>(r.peak_jacobian_bytes, J.numel() * elem);
      rows.fill(0, N, group, J);
      for (int64_t g = 0; g < g1 - g0; ++g) {
        at::Tensor Jg = J.select(0, g);
        K.add_(at::mm(Jg, Jg.t()).to(at::kDouble));
      }
      ++r.passes;
    }
  } else {
    // One output at a time: an anchor panel of A rows held while chunks of S rows stream past.
    r.strategy = "panels";
    const int64_t S = std::max<int64_t>(1, cap / 4);
    const int64_t A = cap - S;
    for (int64_t c : outs) {
      const std::vector<int64_t> one{c};
      for (int64_t a = 0; a < N; a += A) {
        const int64_t na = std::min(A, N - a);
        at::Tensor JA = at::empty({1, na, P}, rows.options());
        rows.fill(a, a + na, one, JA);
        at::Tensor Ja = JA.select(0, 0);
        K.narrow(0, a, na).narrow(1, a, na).add_(at::mm(Ja, Ja.t()).to(at::kDouble));
        int64_t peak = JA.numel() * elem;
        for (int64_t b = a + na; b < N; b += S) {
          const int64_t nb = std::min(S, N - b);
          at::Tensor JS = at::empty({1, nb, P}, rows.options());
          rows.fill(b, b + nb, one, JS);
          peak = std::max<int64_t>(peak, (na + nb) * row_bytes);
          at::Tensor blk = at::mm(Ja, JS.select(0, 0).t()).to(at::kDouble);
          K.narrow(0, a, na).narrow(1, b, nb).add_(blk);
          K.narrow(0, b, nb).narrow(1, a, na).add_(blk.t());
        }
        r.peak_jacobian_bytes = std::max(r.peak_jacobian_bytes, peak);
        ++r.passes;
      }
    }
  }
  // Products of a block with itself need not be bit-symmetric under a blocked GEMM.
  r.gram = (K + K.t()).mul_(0.5);
  r.forward_passes = rows.forwards;
  r.backward_passes = rows.backwards;
  r.workers = workers;
  return r;
}

EighResult symmetric_eigh(const at::Tensor& k, int64_t top_k) {
  check(k.defined() && k.dim() == 2 && k.size(0) == k.size(1), ErrorKind::Shape,
        "eigh: expects a square matrix, got shape ", k.defined() ? shape_str(k.sizes()) : "undefined");
  check(at::isFloatingType(k.scalar_type()), ErrorKind::DType, "eigh: expects a float matrix, got ",
        c10::toString(k.scalar_type()));
  compat::NoGradGuard no_grad;
  const int64_t n = k.size(0);
  at::Tensor a = k.to(at::kDouble);
  auto res = at::linalg_eigh(a, "L");
  at::Tensor values = std::get<0>(res).flip({0}).contiguous();
  const int64_t keep = top_k <= 0 ? n : std::min(top_k, n);
  at::Tensor vectors = std::get<1>(res).flip({1}).narrow(1, 0, keep).contiguous();
  return {values, vectors};
}

}  // namespace tangent
