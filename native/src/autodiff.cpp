#include "../autodiff.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/forward_grad.h>
#include <torch/csrc/autograd/grad_mode.h>

#include <atomic>
#include <mutex>

namespace tangent {
namespace {

using torch::autograd::ForwardADLevel;

// libtorch supports one forward-AD level at a time, process-wide ("nested forward mode AD is not
// supported"), so every dual computation holds this lock for its duration.
std::mutex& dual_mutex() {
  static std::mutex m;
  return m;
}

class DualLevel {
 public:
  DualLevel() : lock_(dual_mutex()), idx_(ForwardADLevel::get_next_idx()) {}
  ~DualLevel() { ForwardADLevel::release_idx(idx_); }
  int64_t idx() const { return static_cast<int64_t>(idx_); }

 private:
  std::lock_guard<std::mutex> lock_;
  compat::MathAttentionGuard math_attention_;  // attention's fused kernels have no forward AD (compat.h)
  uint64_t idx_;
};

void check_tangent(const Model& m, const std::vector<at::Tensor>& state0,
                   const std::vector<at::Tensor>& tangent) {
  check(tangent.size() == m.num_parameters(), ErrorKind::Parameter, "tangent has ", tangent.size(),
        " entries, model has ", m.num_parameters(), " parameters");
  for (size_t i = 0; i < tangent.size(); ++i) {
    if (!tangent[i].defined()) continue;
    const auto& name = m.parameters()[i].first;
    check(tangent[i].sizes() == state0[i].sizes(), ErrorKind::Shape, "tangent '", name,
          "' has shape ", shape_str(tangent[i].sizes()), ", parameter has ",
          shape_str(state0[i].sizes()));
    check(tangent[i].scalar_type() == state0[i].scalar_type(), ErrorKind::DType, "tangent '", name,
          "' has dtype ", c10::toString(tangent[i].scalar_type()), ", parameter has ",
          c10::toString(state0[i].scalar_type()));
    check(tangent[i].device() == state0[i].device(), ErrorKind::Device, "tangent '", name,
          "' is on ", tangent[i].device().str(), ", parameter is on ", state0[i].device().str());
  }
}

std::atomic<JvpMethod> g_jvp_method{JvpMethod::Auto};

// Runs f at state0 with dual parameters; returns (primal, tangent) of the output.
JvpResult forward_ad(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state0,
                     const std::vector<at::Tensor>& tangent) {
  DualLevel level;
  std::vector<at::Tensor> duals(state0.size());
  for (size_t i = 0; i < state0.size(); ++i) {
    const at::Tensor p = state0[i].detach();
    duals[i] = (i < tangent.size() && tangent[i].defined())
                   ? at::_make_dual(p, tangent[i], level.idx())
                   : p;
  }
  at::Tensor out = m.forward(duals, x);
  auto unpacked = at::_unpack_dual(out, level.idx());
  JvpResult r;
  r.primal = std::get<0>(unpacked);
  r.tangent = std::get<1>(unpacked);
  if (!r.tangent.defined()) r.tangent = at::zeros_like(r.primal);  // output independent of θ
  return r;
}

// (f(x; θ0), J·v): the model's hand-written JVP where it has one (and the method is Auto), else
// forward-mode AD. Either way the tangent is differentiable in v by reverse mode.
JvpResult dual_forward(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state0,
                       const std::vector<at::Tensor>& tangent, JvpMethod method) {
  if (method == JvpMethod::Auto) {
    std::vector<at::Tensor> s0(state0.size());
    for (size_t i = 0; i < s0.size(); ++i) s0[i] = state0[i].detach();
    JvpResult r;
    if (m.tangent_forward(s0, tangent, x, r.primal, r.tangent)) return r;
  }
  return forward_ad(m, x, state0, tangent);
}

JvpResult dual_forward(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state0,
                       const std::vector<at::Tensor>& tangent) {
  return dual_forward(m, x, state0, tangent, g_jvp_method.load());
}

std::vector<at::Tensor> leaves_of(const Model& m, const std::vector<at::Tensor>& state) {
  std::vector<at::Tensor> leaves(state.size());
  for (size_t i = 0; i < state.size(); ++i)
    leaves[i] = i < m.num_parameters() ? state[i].detach().requires_grad_(true) : state[i];
  return leaves;
}

std::vector<at::Tensor> grads_of(const at::Tensor& out, const std::vector<at::Tensor>& leaves,
                                 size_t n, const at::Tensor& grad_out, bool create_graph) {
  std::vector<at::Tensor> inputs(leaves.begin(), leaves.begin() + n);
  auto g = torch::autograd::grad({out}, inputs, {grad_out}, /*retain_graph=*/create_graph,
                                 create_graph, /*allow_unused=*/true);
  for (size_t i = 0; i < n; ++i)
    if (!g[i].defined()) g[i] = at::zeros_like(inputs[i]);
  return g;
}

int64_t count_correct(const at::Tensor& logits, const at::Tensor& y) {
  return logits.argmax(-1).eq(y).sum().item<int64_t>();
}

}  // namespace

JvpResult jvp(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state0,
              const std::vector<at::Tensor>& tangent) {
  return jvp(m, x, state0, tangent, g_jvp_method.load());
}

JvpResult jvp(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state0,
              const std::vector<at::Tensor>& tangent, JvpMethod method) {
  m.check_input(x);
  check_tangent(m, state0, tangent);
  compat::NoGradGuard no_grad;
  return dual_forward(m, x, state0, tangent, method);
}

void set_jvp_method(JvpMethod method) { g_jvp_method = method; }
JvpMethod get_jvp_method() { return g_jvp_method.load(); }

at::Tensor jvp_double_backward(const Model& m, const at::Tensor& x,
                               const std::vector<at::Tensor>& state0,
                               const std::vector<at::Tensor>& tangent) {
  m.check_input(x);
  check_tangent(m, state0, tangent);
  torch::autograd::AutoGradMode grad_mode(true);
  const size_t n = m.num_parameters();
  auto leaves = leaves_of(m, state0);
  at::Tensor out = m.forward(leaves, x);
  at::Tensor u = at::zeros_like(out).requires_grad_(true);
  auto jtu = grads_of(out, leaves, n, u, /*create_graph=*/true);  // Jᵀu, linear in u
  at::Tensor dot = at::zeros({}, out.options());
  for (size_t i = 0; i < n; ++i)
    if (tangent[i].defined()) dot = dot + (jtu[i] * tangent[i]).sum();
  if (!dot.requires_grad()) return at::zeros_like(out).detach();
  auto g = torch::autograd::grad({dot}, {u}, {}, false, false, /*allow_unused=*/true);
  return g[0].defined() ? g[0].detach() : at::zeros_like(out).detach();
}

std::vector<at::Tensor> vjp(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state,
                            const at::Tensor& cotangent) {
  m.check_input(x);
  torch::autograd::AutoGradMode grad_mode(true);
  auto leaves = leaves_of(m, state);
  at::Tensor out = m.forward(leaves, x);
  check(cotangent.sizes() == out.sizes(), ErrorKind::Shape, "cotangent has shape ",
        shape_str(cotangent.sizes()), ", model output has shape ", shape_str(out.sizes()));
  auto g = grads_of(out, leaves, m.num_parameters(), cotangent.to(out.dtype()), false);
  for (auto& t : g) t = t.detach();
  return g;
}

at::Tensor forward_eval(const Model& m, const at::Tensor& x, const std::vector<at::Tensor>& state) {
  m.check_input(x);
  compat::NoGradGuard no_grad;
  return m.forward(state, x);
}

namespace {
std::vector<at::Tensor> deltas(const Model& m, const std::vector<at::Tensor>& state0,
                               const std::vector<at::Tensor>& state) {
  std::vector<at::Tensor> d(m.num_parameters());
  for (size_t i = 0; i < d.size(); ++i)
    if (!state[i].is_same(state0[i])) d[i] = state[i] - state0[i].detach();
  return d;
}
}  // namespace

at::Tensor linearized_forward(const Model& m, const at::Tensor& x,
                              const std::vector<at::Tensor>& state0,
                              const std::vector<at::Tensor>& state) {
  m.check_input(x);
  compat::NoGradGuard no_grad;
  auto r = dual_forward(m, x, state0, deltas(m, state0, state));
  return r.primal + r.tangent;
}

at::Tensor apply_head(const Head& head, const at::Tensor& out) {
  if (!head.weight.defined()) return out;
  check(out.dim() == 2 && out.size(1) == head.weight.size(1), ErrorKind::Shape,
        "head expects features [batch, ", head.weight.size(1), "], model output has shape ",
        shape_str(out.sizes()));
  at::Tensor f = out;
  if (head.normalize) f = f / f.norm(2, {-1}, true).clamp_min(1e-12);
  return at::linear(f, head.weight, head.bias);
}

void check_labels(const at::Tensor& y, int64_t batch, int64_t classes) {
  check(y.scalar_type() == at::kLong, ErrorKind::DType, "labels must be int64, got ",
        c10::toString(y.scalar_type()));
  check(y.dim() == 1 && y.size(0) == batch, ErrorKind::Shape, "labels have shape ",
        shape_str(y.sizes()), ", expected [", batch, "]");
  if (y.numel() > 0) {
    const int64_t lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
    check(lo >= 0 && hi < classes, ErrorKind::Argument, "labels must lie in [0, ", classes,
          "), got values in [", lo, ", ", hi, "]");
  }
}

namespace {
at::Tensor mode_output(const Model& m, Mode mode, const at::Tensor& x,
                       const std::vector<at::Tensor>& leaves, const std::vector<at::Tensor>& state0) {
  if (mode == Mode::Standard) return m.forward(leaves, x);
  auto r = dual_forward(m, x, state0, deltas(m, state0, leaves));
  return r.primal + r.tangent;
}
}  // namespace

StepResult loss_and_grad(const Model& m, Mode mode, const at::Tensor& x, const at::Tensor& y,
                         const std::vector<at::Tensor>& state,
                         const std::vector<at::Tensor>& state0, const Head& head) {
  m.check_input(x);
  torch::autograd::AutoGradMode grad_mode(true);
  auto leaves = leaves_of(m, state);
  at::Tensor logits = apply_head(head, mode_output(m, mode, x, leaves, state0));
  check_labels(y, x.size(0), logits.size(-1));
  at::Tensor loss = at::cross_entropy_loss(logits, y);
  StepResult r;
  try {
    r.grads = grads_of(loss, leaves, m.num_parameters(), at::ones_like(loss), false);
  } catch (const c10::Error& e) {
    // Backward through a JVP differentiates each op's derivative again; libtorch lacks some of
    // those second derivatives (hardsigmoid_backward, …). Named, with what still works.
    const std::string msg = e.what_without_backtrace();
    const std::string key = "derivative for ";
    const size_t at = msg.find(key);
    if (mode == Mode::Linear && at != std::string::npos && msg.find("is not implemented") != std::string::npos) {
      const size_t start = at + key.size();
      fail(ErrorKind::Unsupported, "linearized training needs the derivative of ", msg.substr(start, msg.find(' ', start) - start),
           ", which this libtorch does not implement (the model's activation's derivative is not itself "
           "differentiable); forward, JVP, linearized forward and standard training work");
    }
    throw;
  }
  for (auto& g : r.grads) g = g.detach();
  r.loss = loss.item<double>();
  r.correct = count_correct(logits.detach(), y);
  return r;
}

StepResult evaluate(const Model& m, Mode mode, const at::Tensor& x, const at::Tensor& y,
                    const std::vector<at::Tensor>& state, const std::vector<at::Tensor>& state0,
                    const Head& head) {
  m.check_input(x);
  compat::NoGradGuard no_grad;
  at::Tensor out = mode == Mode::Standard ? m.forward(state, x) : linearized_forward(m, x, state0, state);
  at::Tensor logits = apply_head(head, out);
  check_labels(y, x.size(0), logits.size(-1));
  StepResult r;
  r.loss = at::cross_entropy_loss(logits, y).item<double>();
  r.correct = count_correct(logits, y);
  return r;
}

namespace {
std::atomic<int> g_threads{0};
}

void set_num_threads(int n) {
  check(n >= 1, ErrorKind::Argument, "threads must be >= 1, got ", n);
  at::set_num_threads(n);
  g_threads = n;
  using SetFn = void (*)(int);
  if (auto fn = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(n);
}

int get_num_threads() {
  // The process-wide setting; at::get_num_threads() is the calling thread's OpenMP setting, which
  // keep_calling_thread_serial() lowers to 1 on the threads that only dispatch work.
  const int n = g_threads;
  return n > 0 ? n : at::get_num_threads();
}

void keep_calling_thread_serial() {
  // The process-wide setting is libtorch's until set_num_threads: record it before this thread's
  // own setting (what at::get_num_threads() reads here) drops to 1.
  int unset = 0;
  g_threads.compare_exchange_strong(unset, at::get_num_threads());
  // OpenMP regions opened from this thread get one thread (the calling thread's nthreads ICV), so
  // it never owns a team of its own (see binding/compute_thread.h). dlsym: libgomp is libtorch's.
  using SetFn = void (*)(int);
  static const auto fn = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (fn) fn(1);
}

}  // namespace tangent
