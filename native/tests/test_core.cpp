// Plain C++ tests of the native core (no Node): JVPs against central finite differences and the
// double-backward JVP, f_lin identities, and linearized gradients against an independent VJP.
// Usage: tangent_native_tests [cpu|cuda|cuda:N]. Ends with "N passed, N failed".
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "autodiff.h"
#include "bmm.h"
#include <torch/csrc/autograd/autograd.h>
#include "merge_files.h"
#include "merge/method.h"

#include "check.h"

using namespace tangent;


static double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).norm().item<double>() / std::max(b.norm().item<double>(), 1e-30);
}

static std::vector<at::Tensor> random_tangent(const Model& m, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  std::vector<at::Tensor> t;
  for (const auto& p : m.parameters())
    t.push_back(at::empty(p.second.sizes(), at::kDouble).normal_(0, 1, gen).to(p.second.device(), p.second.scalar_type()));
  return t;
}

static std::vector<at::Tensor> axpy(const std::vector<at::Tensor>& s, double a, const std::vector<at::Tensor>& v) {
  std::vector<at::Tensor> out = s;
  for (size_t i = 0; i < v.size(); ++i) out[i] = s[i] + a * v[i];
  return out;
}

static void check_model(const std::string& name, const ModelPtr& m, const at::Tensor& x) {
  auto s0 = m->own_state();
  auto v = random_tangent(*m, 7);
  auto r = jvp(*m, x, s0, v);
  const double h = 1e-6;
  at::Tensor fd = (forward_eval(*m, x, axpy(s0, h, v)) - forward_eval(*m, x, axpy(s0, -h, v))) / (2 * h);
  double e = rel_err(r.tangent, fd);
  expect(e <= 1e-6, name + ": JVP equals central finite differences (rel err " + sci(e) + ")");
  double e2 = rel_err(jvp_double_backward(*m, x, s0, v), r.tangent);
  expect(e2 <= 1e-10, name + ": JVP equals double-backward JVP (rel err " + sci(e2) + ")");
  expect(at::equal(linearized_forward(*m, x, s0, s0), forward_eval(*m, x, s0)),
         name + ": f_lin(θ0) == f(θ0) exactly");
  // Affinity: f_lin(θ0 + 2v) - f_lin(θ0) == 2 (f_lin(θ0 + v) - f_lin(θ0)).
  at::Tensor f0 = linearized_forward(*m, x, s0, s0);
  at::Tensor f1 = linearized_forward(*m, x, s0, axpy(s0, 1e-2, v));
  at::Tensor f2 = linearized_forward(*m, x, s0, axpy(s0, 2e-2, v));
  double e3 = rel_err(f2 - f0, 2 * (f1 - f0));
  expect(e3 <= 1e-9, name + ": f_lin is affine in θ (rel err " + sci(e3) + ")");
  // Linearized gradient equals Jᵀ g with g = ∂CE/∂logits, computed by an independent VJP at θ0.
  const int64_t B = x.size(0);
  at::Tensor y = at::arange(B, at::TensorOptions().dtype(at::kLong).device(x.device())) % 3;
  auto theta = axpy(s0, 1e-2, v);
  auto step = loss_and_grad(*m, Mode::Linear, x, y, theta, s0, Head{});
  at::Tensor logits = linearized_forward(*m, x, s0, theta);
  at::Tensor g = (at::softmax(logits, -1) - at::one_hot(y, logits.size(-1)).to(logits.dtype())) / B;
  auto jtg = vjp(*m, x, s0, g);
  double worst = 0;
  for (size_t i = 0; i < jtg.size(); ++i) worst = std::max(worst, rel_err(step.grads[i], jtg[i]));
  expect(worst <= 1e-9, name + ": linearized loss gradient equals Jᵀg (worst rel err " + sci(worst) + ")");
}

// The ViT's hand-written JVP against forward-mode AD through its plain forward: primal bit for
// bit, tangent to rounding; the linearized gradient by reverse mode through each agrees too.
static void check_handwritten_jvp(const VitConfig& vc, const at::Device& dev, at::ScalarType dt, double tol) {
  const auto m = make_vit(vc, 5, dt, dev);
  const std::string name = std::string("vit (") + c10::toString(dt) + (vc.num_classes ? "" : ", features") + ")";
  auto gen = at::detail::createCPUGenerator(9);
  const at::Tensor x = at::empty({3, 1, vc.image_size, vc.image_size}, at::kDouble).normal_(0, 1, gen).to(dev, dt);
  auto s0 = m->own_state();
  auto v = random_tangent(*m, 8);
  v[3] = at::Tensor();  // an undefined entry is a zero tangent
  const auto a = jvp(*m, x, s0, v, JvpMethod::Auto);
  const auto b = jvp(*m, x, s0, v, JvpMethod::ForwardAD);
  expect(at::equal(a.primal, forward_eval(*m, x, s0)), name + ": hand-written JVP's primal is f(x; θ0) bit for bit");
  const double e = rel_err(a.tangent, b.tangent);
  expect(e <= tol, name + ": hand-written JVP equals forward-mode AD (rel err " + sci(e) + ")");
  if (!vc.num_classes) return;
  const at::Tensor y = at::arange(3, at::TensorOptions().dtype(at::kLong).device(dev)) % 3;
  auto theta = axpy(s0, 1e-2, random_tangent(*m, 10));
  auto ga = loss_and_grad(*m, Mode::Linear, x, y, theta, s0, Head{});
  set_jvp_method(JvpMethod::ForwardAD);
  auto gb = loss_and_grad(*m, Mode::Linear, x, y, theta, s0, Head{});
  set_jvp_method(JvpMethod::Auto);
  double worst = 0;
  for (size_t i = 0; i < ga.grads.size(); ++i) worst = std::max(worst, rel_err(ga.grads[i], gb.grads[i]));
  expect(worst <= tol * 10, name + ": linearized gradient through it equals the one through forward-mode AD (worst rel err " + sci(worst) + ")");
}

// batched_matmul on strided views (a head's slice, a transposed key), two accumulated terms, a
// permuted output, one and two threads, against at::matmul; and its gradients against autograd's.
static void check_batched_matmul() {
  auto gen = at::detail::createCPUGenerator(4);
  for (auto dt : {at::kFloat, at::kDouble}) {
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      const int64_t B = 3, T = 7, H = 2, hd = 5;
      const at::Tensor qkv = at::empty({B * T, 3 * H * hd}, at::kDouble).normal_(0, 1, gen).to(dt);
      auto head = [&](const at::Tensor& t, int64_t w) { return t.view({B, T, 3, H, hd}).select(2, w).permute({0, 2, 1, 3}); };
      const at::Tensor q = head(qkv, 0), kT = head(qkv, 1).transpose(-2, -1), v = head(qkv, 2);
      const at::Tensor ref = at::matmul(q, kT) * 0.5;
      at::Tensor s = batched_matmul({q, kT}, {}, 0.5);
      const double tol = dt == at::kFloat ? 1e-5 : 1e-12;
      const std::string tag = std::string(c10::toString(dt)) + ", " + std::to_string(threads) + " thread(s)";
      expect(s.sizes() == ref.sizes() && (s - ref).abs().max().item<double>() < tol, "batched_matmul: strided q·kᵀ = at::matmul (" + tag + ")");
      at::Tensor o = batched_matmul({s, v}, {s * 2, v}, 1, {0, 2, 1, 3});
      const at::Tensor oref = at::matmul(s, v) * 3;
      expect(o.transpose(1, 2).is_contiguous() && (o - oref).abs().max().item<double>() < tol * 10,
             "batched_matmul: two terms into a [B, T, H, hd] layout = at::matmul (" + tag + ")");
      // Gradients: reverse mode through it equals reverse mode through at::matmul.
      at::Tensor a1 = at::empty({B, T, hd}, at::kDouble).normal_(0, 1, gen).to(dt).requires_grad_();
      at::Tensor b1 = at::empty({B, T, hd}, at::kDouble).normal_(0, 1, gen).to(dt).requires_grad_();
      at::Tensor g = at::empty({B, T, T}, at::kDouble).normal_(0, 1, gen).to(dt);
      auto ours = torch::autograd::grad({batched_matmul({a1, b1.transpose(1, 2)}, {b1, a1.transpose(1, 2)}, 0.3)}, {a1, b1}, {g});
      auto theirs = torch::autograd::grad({(at::matmul(a1, b1.transpose(1, 2)) + at::matmul(b1, a1.transpose(1, 2))) * 0.3}, {a1, b1}, {g});
      const double ge = std::max(rel_err(ours[0], theirs[0]), rel_err(ours[1], theirs[1]));
      expect(ge < tol, "batched_matmul: gradients = at::matmul's (" + tag + ", rel err " + sci(ge) + ")");
    }
  }
  set_num_threads(1);
}

// File-to-file merges, the fused task arithmetic and the streamed methods (merge/stream.h):
// mapped reads equal positioned reads bit for bit, the file merge equals merge_tensor, and an input
// truncated after it was mapped is an IO error naming it (the SIGBUS is caught), not a crash.
static int merge_truncate_fd = -1;
static void check_merge_files_for(const std::string& method) {
  const std::string tag = "merge_files (" + method + "): ";
  char dir[] = "/tmp/tangent-native-merge-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return expect(false, "mkdtemp");
  const int64_t n = 3 * 65536 + 17;  // several chunks and a ragged tail
  const std::string in_path = std::string(dir) + "/in.bin", out_path = std::string(dir) + "/out.bin";
  auto gen = at::detail::createCPUGenerator(7);
  at::Tensor a = at::empty({2, n}, at::kFloat).normal_(0, 1, gen);
  {
    const int fd = ::open(in_path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    expect(fd >= 0 && ::write(fd, a.data_ptr(), a.nbytes()) == static_cast<ssize_t>(a.nbytes()), "merge_files: input written");
    ::close(fd);
  }
  const int in_fd = ::open(in_path.c_str(), O_RDWR);
  const int out_fd = ::open(out_path.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0600);
  std::vector<OpenFile> files{{in_fd, in_path}};
  const OpenFile out{out_fd, out_path};
  FileMergeItem it;
  it.name = "w";
  it.shape = {n};
  it.inputs = {{0, 0}, {0, static_cast<uint64_t>(n) * 4}};  // base = row 0, model = row 1
  MergeSpec spec;
  spec.method = method;
  if (method != "slerp") spec.lambda = 0.3;
  if (method == "slerp") spec.t = 0.3;
  if (method == "ties") spec.density = {0.4};
  spec.compute = at::kFloat;
  spec.out = at::kFloat;
  auto read_out = [&] {
    at::Tensor r = at::empty({n}, at::kFloat);
    expect(::pread(out_fd, r.data_ptr(), r.nbytes(), 0) == static_cast<ssize_t>(r.nbytes()), "merge_files: output read back");
    return r;
  };
  merge_file_tensors(files, out, {it}, {spec}, true);
  const at::Tensor mapped = read_out();
  merge_files_use_mmap = false;
  merge_file_tensors(files, out, {it}, {spec}, true);
  merge_files_use_mmap = true;
  const at::Tensor preads = read_out();
  expect(at::equal(mapped, preads), tag + "memory-mapped reads = positioned reads, bit for bit");
  if (method == "task_arithmetic") {
    const at::Tensor expected = a[0] + 0.3 * (a[1] - a[0]);
    expect((mapped - expected).abs().max().item<double>() < 1e-6, tag + "θ0 + λ(θ1 − θ0)");
  } else {
    expect(at::equal(mapped, merge_tensor("w", a[0].contiguous(), {a[1].contiguous()}, spec)), tag + "the file merge = merge_tensor, bit for bit");
    MergeSpec whole = spec;
    whole.compute = at::kDouble;
    whole.out = at::kDouble;
    // The whole-tensor (device) implementation, on float64 copies: the same merge within float32 rounding.
    const at::Tensor ref = merge_tensor("w", a[0].to(at::kDouble).contiguous(), {a[1].to(at::kDouble).contiguous()}, whole);
    expect((mapped.to(at::kDouble) - ref).abs().max().item<double>() < 1e-5, tag + "= the float64 merge within float32 rounding");
  }

  merge_truncate_fd = in_fd;
  merge_files_after_map_hook = [] { (void)!::ftruncate(merge_truncate_fd, 4096); };
  std::string msg;
  ErrorKind kind = ErrorKind::State;
  try {
    merge_file_tensors(files, out, {it}, {spec}, true);
  } catch (const Error& e) {
    msg = e.what();
    kind = e.kind;
  }
  merge_files_after_map_hook = nullptr;
  expect(kind == ErrorKind::IO && msg.find("in.bin: tensor 'w': could not read byte") != std::string::npos &&
             msg.find("truncated") != std::string::npos,
         tag + "an input truncated under the mapping is an IO error naming it (SIGBUS caught): " + msg);
  msg.clear();
  try {
    merge_file_tensors(files, out, {it}, {spec}, true);
  } catch (const Error& e) {
    msg = e.what();
  }
  expect(msg.find("in.bin: tensor 'w': unexpected end of file at byte 4096") != std::string::npos,
         tag + "a span past the end of a file is refused before reading: " + msg);
  ::close(in_fd);
  ::close(out_fd);
  ::unlink(in_path.c_str());
  ::unlink(out_path.c_str());
  ::rmdir(dir);
}

// The streamed merges (merge_tensor on the CPU) = the whole-tensor implementations the other
// devices run (each method's run), on values quantized to eighths so that |τ| ties abound (the
// rank bounds' tie counts across chunks), over several chunks, float32 and float64.
static void check_streamed_merges() {
  auto gen = at::detail::createCPUGenerator(5);
  const int64_t n = 2 * 65536 + 333;
  auto q = [&](double sd) { return (at::empty({n}, at::kDouble).normal_(0, sd, gen) * 8).round() / 8; };
  const at::Tensor base = q(1.0);
  std::vector<at::Tensor> ft;
  for (int k = 0; k < 3; ++k) ft.push_back(base + q(0.3));
  for (const MergeMethodInfo& info : merge_methods()) {
    const merge::Method& m = merge::find(info.name);
    MergeSpec spec;
    spec.method = info.name;
    if (std::string(info.name) == "nuslerp") spec.flatten = false;  // rows (streamed over whole rows); 1-D: the whole tensor
    if (!m.streams(spec, 1)) continue;
    const size_t k = info.max_models == 0 ? 3 : info.max_models;
    if (m.coefficients == nullptr || std::string(info.name) == "linear" || std::string(info.name) == "nuslerp" ||
        std::string(info.name) == "multislerp")
      spec.weights = std::vector<double>{1.0, 0.5, 0.25};
    spec.weights.resize(spec.weights.empty() ? 0 : k);
    spec.lambda = std::string(info.name) == "ties" || std::string(info.name).rfind("breadcrumbs", 0) == 0 ? 0.7 : 1.0;
    spec.density = std::vector<double>(k, 0.37);
    spec.gamma = std::vector<double>(k, std::string(info.name).rfind("breadcrumbs", 0) == 0 ? 0.11 : 0.0);
    spec.t = 0.3;
    spec.select_topk = 0.45;  // sce: the variance selection, with ties among the quantized values
    spec.ram_epsilon = 0.2;   // ram: |τ| of 1/8 counts as unchanged
    if (std::string(info.name) != "ties" && std::string(info.name).rfind("breadcrumbs", 0) != 0) spec.density.clear(), spec.gamma.clear();
    for (at::ScalarType dt : {at::kFloat, at::kDouble})
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{n}, std::vector<int64_t>{205, 641}}) {  // 205·641 = n: DELLA's rows over chunks
      spec.compute = dt;
      spec.out = dt;
      const at::Tensor b = info.base == BaseUse::None ? at::Tensor() : base.to(dt).reshape(shape);
      std::vector<at::Tensor> xs;
      for (size_t i = 0; i < k; ++i) xs.push_back(ft[i].to(dt).reshape(shape));
      const at::Tensor got = merge_tensor("w", b, xs, spec);
      const at::Tensor want = m.run(merge::Context("w", b, xs, spec));
      const double e = (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
      expect(e <= (dt == at::kFloat ? 2e-5 : 1e-12), std::string("streamed ") + info.name + " (" + c10::toString(dt) + ", " +
                                                          std::to_string(shape.size()) + "-D) = its whole-tensor run (max |Δ| " + sci(e) + ")");
    }
  }
}

static void check_merge_files() {
  check_streamed_merges();
  set_num_threads(2);  // chunks on two threads: the result may not depend on them
  for (const char* m : {"task_arithmetic", "slerp", "ties"}) check_merge_files_for(m);
  set_num_threads(1);
}

// A torch.export program built by hand (what lib/checkpoint/pt2.ts hands over): x[B, 6] ->
// linear -> gelu -> mul by a Python float -> view([B, -1]) with B = sym_size(x, 0) -> linear.
static ExportArg value_arg(const std::string& name, int64_t ref) {
  ExportArg a; a.name = name; a.kind = ExportArg::Kind::Value; a.refs = {ref}; return a;
}
static ExportArg const_arg(const std::string& name, c10::IValue v) {
  ExportArg a; a.name = name; a.constant = std::move(v); return a;
}
static ExportNode node(const std::string& name, const std::string& target, std::vector<ExportArg> args, std::vector<int64_t> outs) {
  ExportNode n; n.name = name; n.target = target; n.args = std::move(args);
  for (int64_t o : outs) { n.outputs.push_back({o}); n.list_output.push_back(false); }
  return n;
}
static ExportedProgram small_program(const at::Device& dev) {
  auto gen = at::detail::createCPUGenerator(11);
  auto rnd = [&](std::vector<int64_t> s) { return at::empty(s, at::kDouble).normal_(0, 0.5, gen); };
  ExportedProgram p;
  p.path = "hand-built";
  // values: 0 W1, 1 b1, 2 W2, 3 b2, 4 x, 5 h, 6 g, 7 m, 8 B, 9 v, 10 out
  p.num_values = 11;
  p.state = {{ExportState::Kind::Parameter, "fc1.weight", 0, rnd({8, 6})}, {ExportState::Kind::Parameter, "fc1.bias", 1, rnd({8})},
             {ExportState::Kind::Parameter, "fc2.weight", 2, rnd({3, 8})}, {ExportState::Kind::Parameter, "fc2.bias", 3, rnd({3})}};
  ExportInput in; in.name = "x"; in.value = 4; in.dtype = at::kDouble; in.sizes = {-1, 6}; in.symbols = {"s0", ""};
  in.min_size = {1, -1}; in.max_size = {64, -1};
  p.inputs = {in};
  ExportArg shape; shape.name = "size"; shape.kind = ExportArg::Kind::IntList; shape.refs = {8, -1}; shape.literals = {0, -1};
  p.nodes = {node("linear", "aten::linear.default", {value_arg("input", 4), value_arg("weight", 0), value_arg("bias", 1)}, {5}),
             node("gelu", "aten::gelu.default", {value_arg("self", 5)}, {6}),
             node("mul", "aten::mul.Tensor", {value_arg("self", 6), const_arg("other", 0.5)}, {7}),
             node("sym_size_int", "aten::sym_size.int", {value_arg("self", 4), const_arg("dim", int64_t(0))}, {8}),
             node("view", "aten::view.default", {value_arg("self", 7), shape}, {9}),
             node("linear_1", "aten::linear.default", {value_arg("input", 9), value_arg("weight", 2), value_arg("bias", 3)}, {10})};
  p.output = 10;
  (void)dev;
  return p;
}

static void check_exported(const at::Device& dev) {
  auto prog = small_program(dev);
  std::vector<at::Tensor> w;
  for (const auto& s : prog.state) w.push_back(s.tensor.to(dev));
  auto m = load_exported(prog, dev);
  auto gen = at::detail::createCPUGenerator(5);
  at::Tensor x = at::empty({5, 6}, at::kDouble).normal_(0, 1, gen).to(dev);
  at::Tensor ref = at::linear(at::gelu(at::linear(x, w[0], w[1])) * 0.5, w[2], w[3]);
  expect(at::allclose(forward_eval(*m, x, m->own_state()), ref, 1e-12, 1e-12),
         "exported: the node-by-node forward equals ATen called directly");
  check_model("exported", m, x);
  auto refused = [&](const std::function<void(ExportedProgram&)>& edit, ErrorKind kind, const std::string& needle, const std::string& what) {
    auto p = small_program(dev);
    edit(p);
    bool ok = false;
    std::string msg;
    try { load_exported(p, dev); } catch (const Error& e) { msg = e.what(); ok = e.kind == kind && msg.find(needle) != std::string::npos; }
    expect(ok, "exported: " + what + (ok ? "" : " (got: " + msg + ")"));
  };
  refused([](ExportedProgram& p) { p.nodes[1].target = "aten::no_such_op.default"; }, ErrorKind::Unsupported,
          "calls aten::no_such_op.default, which this libtorch", "an unknown operator is refused at load, naming it");
  refused([](ExportedProgram& p) { p.nodes[1].target = "aten::from_file.default"; }, ErrorKind::Unsupported,
          "which a loaded program may not call", "aten::from_file (reads and maps files) is refused");
  refused([](ExportedProgram& p) { p.nodes[0].target = "custom::linear.default"; }, ErrorKind::Unsupported,
          "only aten and prims operators", "another namespace is refused");
  refused([](ExportedProgram& p) {
    p.nodes.insert(p.nodes.begin(), node("add_", "aten::add_.Tensor", {value_arg("self", 1), value_arg("other", 1)}, {5}));
    p.nodes[1].outputs = {{6}}; p.nodes.erase(p.nodes.begin() + 2);  // keep the value numbering valid
  }, ErrorKind::Unsupported, "writes in place to parameter 'fc1.bias'", "an in-place write to a parameter is refused");
  refused([](ExportedProgram& p) { p.nodes[0].args.push_back(const_arg("alpha", 1.0)); }, ErrorKind::Argument,
          "gives argument 'alpha', which aten::linear.default does not take", "an argument the schema lacks is refused");
  refused([](ExportedProgram& p) { p.nodes[5].args[0].refs = {9999}; }, ErrorKind::Argument,
          "refers to value 9999", "a value out of range is refused");
  bool threw = false;
  try { forward_eval(*m, at::zeros({65, 6}, at::TensorOptions().dtype(at::kDouble).device(dev)), m->own_state()); } catch (const Error& e) {
    threw = e.kind == ErrorKind::Shape && std::string(e.what()).find("outside the range the program was exported for [1, 64]") != std::string::npos;
  }
  expect(threw, "exported: a batch outside the exported range is a ShapeError naming the range");
}

int main(int argc, char** argv) {
  const at::Device dev(argc > 1 ? argv[1] : "cpu");
  std::printf("# device %s, libtorch threads %d\n", dev.str().c_str(), get_num_threads());
  auto gen = at::detail::createCPUGenerator(3);
  auto img = [&](int64_t b, int64_t c, int64_t s) {
    return at::empty({b, c, s, s}, at::kDouble).normal_(0, 1, gen).to(dev);
  };
  MlpConfig mc; mc.input_dim = 12; mc.hidden = {16, 8}; mc.output_dim = 5;
  if (dev.is_cpu()) check_batched_matmul();
  check_model("mlp", make_mlp(mc, 1, at::kDouble, dev), img(4, 3, 2).reshape({4, 12}));
  CnnConfig cc; cc.in_channels = 2; cc.image_size = 8; cc.channels = {4, 6}; cc.output_dim = 5;
  check_model("cnn", make_cnn(cc, 2, at::kDouble, dev), img(3, 2, 8));
  VitConfig vc; vc.image_size = 8; vc.patch_size = 4; vc.in_channels = 1; vc.dim = 16; vc.depth = 2;
  vc.heads = 2; vc.mlp_dim = 24; vc.num_classes = 5;
  check_model("vit", make_vit(vc, 3, at::kDouble, dev), img(3, 1, 8));
  check_handwritten_jvp(vc, dev, at::kDouble, 1e-13);
  check_handwritten_jvp(vc, dev, at::kFloat, 1e-5);
  vc.num_classes = 0;  // features out
  check_handwritten_jvp(vc, dev, at::kDouble, 1e-13);
  // CLIP's towers (open_clip's architecture): the hand-written JVPs against finite differences,
  // double backward and the linearized-gradient identity; text with token ids and the causal mask.
  ClipVisionConfig cv; cv.image_size = 8; cv.patch_size = 4; cv.width = 16; cv.layers = 2; cv.heads = 2;
  cv.mlp_dim = 24; cv.embed_dim = 6;
  check_model("clip image tower", make_clip_vision(cv, 4, at::kDouble, dev), img(3, 3, 8));
  cv.quick_gelu = true;
  check_model("clip image tower (QuickGELU)", make_clip_vision(cv, 5, at::kDouble, dev), img(3, 3, 8));
  ClipTextConfig ct; ct.context_length = 8; ct.vocab_size = 30; ct.width = 16; ct.layers = 2; ct.heads = 2;
  ct.mlp_dim = 24; ct.embed_dim = 6; ct.quick_gelu = true;
  const at::Tensor ids = at::tensor({1, 7, 29, 0, 0, 3, 12, 5, 29, 0, 2, 29, 0, 0, 0}, at::kLong).view({3, 5}).to(dev);
  check_model("clip text tower", make_clip_text(ct, 6, at::kDouble, dev), ids);
  check_exported(dev);

  // Bad input names the problem.
  auto m = make_mlp(mc, 1, at::kDouble, dev);
  bool threw = false;
  try { forward_eval(*m, img(2, 1, 2), m->own_state()); } catch (const Error& e) {
    threw = e.kind == ErrorKind::Shape && std::string(e.what()).find("[2, 1, 2, 2]") != std::string::npos;
  }
  expect(threw, "wrong input shape raises a ShapeError naming the shape");
  threw = false;
  try { m->resolve({}); } catch (const Error& e) {
    threw = e.kind == ErrorKind::Parameter && std::string(e.what()).find("layers.0.weight") != std::string::npos;
  }
  expect(threw, "a missing parameter raises a ParameterError naming it");

  if (dev.is_cpu()) check_merge_files();

  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
