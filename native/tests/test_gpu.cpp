// Plain C++ tests of the native core on a CUDA device, against float64 results on the CPU: JVPs
// (hand-written and forward-mode AD), the linearized forward and its gradients, merges and the
// empirical NTK; then an NCCL group over every GPU present (one rank per GPU, threads of this
// process). With --bench, also times the built-in ViT of bench/core.ts on the device.
//
// Usage: tangent_gpu_tests [--bench [reps]]. Ends with "N passed, N failed, N skipped". Without a
// CUDA device (or with a CPU-only libtorch) each test is named as skipped with the reason, and the
// run passes: the CPU machines of CI build and run this binary too.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>

#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "autodiff.h"
#include "distributed.h"
#include "merge.h"
#include "merge_files.h"
#include "ntk.h"

#include "check.h"

using namespace tangent;

static int skipped = 0;
static std::string skip_reason;

// Runs `body` (which calls expect) unless there is no device: then names the test as skipped.
static void gpu_test(const std::string& name, const std::function<void()>& body) {
  if (!skip_reason.empty()) {
    std::printf("ok %s # SKIP %s\n", name.c_str(), skip_reason.c_str());
    ++skipped;
    return;
  }
  try {
    body();
  } catch (const std::exception& e) {
    expect(false, name + ": threw " + std::string(e.what()).substr(0, 400));
  }
}

static double rel_err(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor a64 = a.to(at::kCPU, at::kDouble), b64 = b.to(at::kCPU, at::kDouble);
  return (a64 - b64).norm().item<double>() / std::max(b64.norm().item<double>(), 1e-30);
}

static std::vector<at::Tensor> to(const std::vector<at::Tensor>& v, const at::Device& d, at::ScalarType dt) {
  std::vector<at::Tensor> out;
  for (const auto& t : v) out.push_back(t.defined() ? t.to(d, dt) : t);
  return out;
}

static std::vector<at::Tensor> normal_like(const std::vector<at::Tensor>& s, uint64_t seed, double scale) {
  auto gen = at::detail::createCPUGenerator(seed);
  std::vector<at::Tensor> out;
  for (const auto& p : s) out.push_back(at::empty(p.sizes(), at::kDouble).normal_(0, scale, gen));
  return out;
}

static std::vector<at::Tensor> add(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < a.size(); ++i) out.push_back(a[i] + b[i]);
  return out;
}

// One model: the same parameters on the CPU in float64 (the reference) and on the device in
// float64 and float32; JVP by each method, f_lin at θ and its gradient, all against the reference.
static void check_model(const std::string& name, const std::function<ModelPtr(at::ScalarType, at::Device)>& make,
                        const at::Tensor& x64, const at::Device& dev) {
  const auto ref = make(at::kDouble, at::kCPU);
  const auto s0 = ref->own_state();
  const auto v = normal_like(s0, 11, 1.0);
  const auto theta = add(s0, normal_like(s0, 12, 1e-2));
  const auto jr = jvp(*ref, x64, s0, v, JvpMethod::ForwardAD);
  const at::Tensor lin_ref = linearized_forward(*ref, x64, s0, theta);
  const int64_t classes = jr.primal.size(1);
  const at::Tensor y = at::arange(x64.size(0), at::kLong) % classes;
  const auto gref = loss_and_grad(*ref, Mode::Linear, x64, y, theta, s0, Head{});
  for (auto dt : {at::kDouble, at::kFloat}) {
    const double tol = dt == at::kDouble ? 1e-10 : 2e-4;
    const std::string tag = name + " on " + dev.str() + " (" + c10::toString(dt) + ")";
    const auto m = make(dt, dev);
    const auto x = x64.to(dev, dt);
    const auto s = to(s0, dev, dt), vv = to(v, dev, dt), th = to(theta, dev, dt);
    for (auto method : {JvpMethod::Auto, JvpMethod::ForwardAD}) {
      const auto r = jvp(*m, x, s, vv, method);
      const double ep = rel_err(r.primal, jr.primal), et = rel_err(r.tangent, jr.tangent);
      expect(r.tangent.device() == dev && ep <= tol && et <= tol,
             tag + ": JVP (" + (method == JvpMethod::Auto ? "auto" : "forward-ad") + ") = float64 CPU (primal " + sci(ep) +
                 ", tangent " + sci(et) + ")");
    }
    const double el = rel_err(linearized_forward(*m, x, s, th), lin_ref);
    expect(el <= tol, tag + ": linearized forward = float64 CPU (rel err " + sci(el) + ")");
    const auto g = loss_and_grad(*m, Mode::Linear, x.to(dev), y.to(dev), th, s, Head{});
    double worst = 0;
    for (size_t i = 0; i < g.grads.size(); ++i) worst = std::max(worst, rel_err(g.grads[i], gref.grads[i]));
    expect(std::abs(g.loss - gref.loss) <= tol * std::max(1.0, std::abs(gref.loss)) && worst <= tol * 10,
           tag + ": linearized loss and gradient = float64 CPU (loss " + std::to_string(g.loss) + " vs " +
               std::to_string(gref.loss) + ", worst grad rel err " + sci(worst) + ")");
  }
}

// Every registered method, on the device and on the CPU, with the parameters each takes (one model
// for slerp, nearswap and passthrough, two for nuslerp, three otherwise; a base where it takes one).
static void check_merges(const at::Device& dev) {
  auto gen = at::detail::createCPUGenerator(21);
  const at::Tensor base = at::empty({257, 129}, at::kDouble).normal_(0, 1, gen);
  std::vector<at::Tensor> ft;
  for (int k = 0; k < 3; ++k) ft.push_back(base + at::empty({257, 129}, at::kDouble).normal_(0, 0.1, gen));
  for (const MergeMethodInfo& info : merge_methods()) {
    const std::string method = info.name;
    const size_t n = info.max_models == 0 ? 3 : info.max_models;
    MergeSpec spec;
    spec.method = method;
    spec.weights = std::vector<double>{1.0, 0.5, 0.25};
    spec.weights.resize(n);
    if (method == "sce" || method == "karcher" || method == "model_stock" || method == "ram" || method == "ramplus_tl" ||
        method == "slerp" || method == "nearswap" || method == "passthrough")
      spec.weights.clear();
    spec.lambda = 0.7;
    spec.density = std::vector<double>(n, 0.5);
    spec.gamma = std::vector<double>(n, 0.05);
    spec.epsilon = std::vector<double>(n, 0.1);
    spec.t = 0.3;
    spec.select_topk = 0.5;
    spec.ram_epsilon = 0.05;
    spec.compute = at::kDouble;
    spec.out = at::kDouble;
    const std::vector<at::Tensor> models(ft.begin(), ft.begin() + static_cast<long>(n));
    const at::Tensor b = info.base == BaseUse::None ? at::Tensor() : base;
    const at::Tensor ref = merge_tensor("w", b, models, spec);
    std::vector<at::Tensor> md;
    for (const auto& t : models) md.push_back(t.to(dev));
    const at::Tensor got = merge_tensor("w", b.defined() ? b.to(dev) : b, md, spec);
    const double e = rel_err(got, ref);
    expect(got.device() == dev && e <= 1e-12, "merge " + method + " on " + dev.str() + " = CPU (rel err " + sci(e) + ")");
  }
}

// File to file on the device (tangent merge --device cuda): bf16 inputs in one file, the output
// read back, equal to the CPU's streamed file merge within bf16 rounding, for a few methods.
static void check_merge_files_on(const at::Device& dev) {
  char dir[] = "/tmp/tangent-gpu-merge-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return expect(false, "mkdtemp");
  const std::string in_path = std::string(dir) + "/in.bin", out_path = std::string(dir) + "/out.bin";
  auto gen = at::detail::createCPUGenerator(9);
  const int64_t n = 3 * 65536 + 5;
  const at::Tensor a = at::empty({3, n}, at::kFloat).normal_(0, 1, gen).to(at::kBFloat16);
  const int fd = ::open(in_path.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0600);
  const int out_fd = ::open(out_path.c_str(), O_CREAT | O_TRUNC | O_RDWR, 0600);
  expect(fd >= 0 && out_fd >= 0 && ::write(fd, a.data_ptr(), a.nbytes()) == static_cast<ssize_t>(a.nbytes()), "gpu merge_files: input written");
  const std::vector<OpenFile> files{{fd, in_path}};
  const OpenFile out{out_fd, out_path};
  FileMergeItem it;
  it.name = "w";
  it.dtype = at::kBFloat16;
  it.out = at::kBFloat16;
  it.shape = {n};
  it.inputs = {{0, 0}, {0, static_cast<uint64_t>(n) * 2}, {0, static_cast<uint64_t>(n) * 4}};
  for (const char* method : {"task_arithmetic", "ties", "slerp", "karcher"}) {
    MergeSpec spec;
    spec.method = method;
    spec.out = at::kBFloat16;
    if (std::string(method) == "ties") spec.density = {0.5, 0.5};
    if (std::string(method) == "slerp") it.inputs.resize(2);
    it.base = std::string(method) != "karcher";
    auto run = [&](const at::Device& d) {
      merge_file_tensors(files, out, {it}, {spec}, true, d);
      at::Tensor r = at::empty({n}, at::kBFloat16);
      expect(::pread(out_fd, r.data_ptr(), r.nbytes(), 0) == static_cast<ssize_t>(r.nbytes()), "gpu merge_files: output read back");
      return r.to(at::kFloat);
    };
    const at::Tensor cpu = run(at::Device(at::kCPU)), gpu = run(dev);
    const double e = (cpu - gpu).abs().max().item<double>() / std::max(1e-12, cpu.abs().max().item<double>());
    expect(e <= 1e-2, std::string("merge_files ") + method + " --device " + dev.str() + " = the CPU's file merge within bf16 rounding (max rel " + sci(e) + ")");
  }
  ::close(fd);
  ::close(out_fd);
  ::unlink(in_path.c_str());
  ::unlink(out_path.c_str());
  ::rmdir(dir);
}

static void check_ntk(const at::Device& dev) {
  MlpConfig mc;
  mc.input_dim = 10;
  mc.hidden = {12};
  mc.output_dim = 3;
  auto gen = at::detail::createCPUGenerator(31);
  const at::Tensor x = at::empty({6, 10}, at::kDouble).normal_(0, 1, gen);
  const auto ref = make_mlp(mc, 4, at::kDouble, at::kCPU);
  NtkOptions o;
  o.jacobian_dtype = at::kDouble;
  const auto kr = empirical_ntk(*ref, x, ref->own_state(), o);
  const auto m = make_mlp(mc, 4, at::kDouble, dev);
  const auto kg = empirical_ntk(*m, x.to(dev), to(ref->own_state(), dev, at::kDouble), o);
  const double e = rel_err(kg.gram, kr.gram);
  expect(e <= 1e-10, "NTK (trace, 6 inputs) on " + dev.str() + " = CPU (rel err " + sci(e) + ")");
}

// A port the kernel just handed out (closed again; the small race test_distributed lives with too).
static int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

// One rank per GPU as threads of this process, over a TCPStore on 127.0.0.1.
static void check_nccl(int n) {
  const int port = free_port();
  std::vector<std::string> errs(n);
  std::vector<double> sums(n, 0), bcast(n, 0);
  std::vector<std::thread> th;
  for (int r = 0; r < n; ++r)
    th.emplace_back([&, r] {
      try {
        ProcessGroupOptions o;
        o.backend = "nccl";
        o.world_size = n;
        o.rank = r;
        o.port = port;
        o.timeout = std::chrono::milliseconds(60000);
        auto pg = ProcessGroup::create(o);
        const auto opt = at::TensorOptions().dtype(at::kFloat).device(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(r)));
        at::Tensor t = at::full({1000}, static_cast<double>(r + 1), opt);
        pg->all_reduce({t}, ReduceKind::Sum);
        sums[r] = t.to(at::kCPU)[999].item<double>();
        at::Tensor b = at::full({10}, static_cast<double>(r + 7), opt);
        pg->broadcast({b}, 0);
        bcast[r] = b.to(at::kCPU)[9].item<double>();
        pg->close();
      } catch (const std::exception& e) {
        errs[r] = e.what();
      }
    });
  for (auto& t : th) t.join();
  const double want = n * (n + 1) / 2.0;
  bool ok = true;
  std::string why;
  for (int r = 0; r < n; ++r) {
    if (!errs[r].empty()) ok = false, why += "; rank " + std::to_string(r) + ": " + errs[r].substr(0, 300);
    if (sums[r] != want || bcast[r] != 7) ok = false;
  }
  expect(ok, "NCCL group of " + std::to_string(n) + " GPU(s): all-reduce sum = " + std::to_string(want) +
                 ", broadcast from rank 0 = 7 on every rank (got " + std::to_string(sums[0]) + ", " + std::to_string(bcast[0]) + ")" + why);
}

// A one-channel ViT with 4×4 patches.
static VitConfig vit_config(int64_t image, int64_t dim, int64_t depth, int64_t heads, int64_t mlp, int64_t classes) {
  VitConfig vc;
  vc.image_size = image;
  vc.patch_size = 4;
  vc.in_channels = 1;
  vc.dim = dim;
  vc.depth = depth;
  vc.heads = heads;
  vc.mlp_dim = mlp;
  vc.num_classes = classes;
  return vc;
}

static double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// The built-in ViT of bench/core.ts (dim 128, depth 4, heads 4, patch 4, 28×28, 10 classes, batch
// 128), float32 on the device: median of `reps` after 3 warm-ups, each op synchronized.
static void bench(const at::Device& dev, int reps) {
  const VitConfig vc = vit_config(28, 128, 4, 4, 256, 10);
  const auto m = make_vit(vc, 0, at::kFloat, dev);
  const auto s0 = m->own_state();
  const auto theta = add(s0, to(normal_like(to(s0, at::kCPU, at::kDouble), 1, 1e-2), dev, at::kFloat));
  auto gen = at::detail::createCPUGenerator(2);
  const at::Tensor x = at::empty({128, 1, 28, 28}, at::kFloat).normal_(0, 1, gen).to(dev);
  const at::Tensor y = (at::arange(128, at::kLong) % 10).to(dev);
  auto sync = [&] { at::detail::getCUDAHooks().deviceSynchronize(dev.index()); };
  std::vector<std::pair<std::string, std::function<void()>>> ops = {
      {"forward", [&] { forward_eval(*m, x, theta); }},
      {"linearizedForward", [&] { linearized_forward(*m, x, s0, theta); }},
      {"standardTrainStep", [&] { loss_and_grad(*m, Mode::Standard, x, y, theta, s0, Head{}); }},
      {"linearizedTrainStep", [&] { loss_and_grad(*m, Mode::Linear, x, y, theta, s0, Head{}); }},
  };
  std::printf("# bench: built-in ViT (dim 128, depth 4, heads 4, patch 4, 28x28, batch 128), float32 on %s, median of %d\n",
              dev.str().c_str(), reps);
  std::printf("{\"bench\": {");
  bool first = true;
  for (auto& [name, f] : ops) {
    for (int i = 0; i < 3; ++i) f();
    sync();
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      f();
      sync();
      t.push_back(ms_since(t0));
    }
    std::sort(t.begin(), t.end());
    std::printf("%s\"%s\": %.3f", first ? "" : ", ", name.c_str(), t[t.size() / 2]);
    first = false;
  }
  std::printf("}}\n");
}

int main(int argc, char** argv) {
  const bool want_bench = argc > 1 && std::string(argv[1]) == "--bench";
  const int reps = argc > 2 ? std::atoi(argv[2]) : 30;
  const bool have_gpu = at::hasCUDA();  // a CUDA libtorch and a visible device
  const int gpus = have_gpu ? static_cast<int>(at::detail::getCUDAHooks().getNumGPUs()) : 0;
  if (!have_gpu) {
#ifdef TANGENT_CUDA_BUILD
    skip_reason = "no CUDA device visible (libtorch " + std::string(compat::torch_header_version()) + " is a CUDA build; this machine has no GPU)";
#else
    skip_reason = "CPU-only libtorch " + std::string(compat::torch_header_version()) + " (the CUDA tests need a CUDA libtorch and a GPU)";
#endif
  }
  std::printf("# libtorch %s, CUDA GPUs visible: %d\n", compat::torch_header_version(), gpus);
  const at::Device dev(at::kCUDA, 0);
  auto gen = at::detail::createCPUGenerator(3);
  auto normal = [&](std::vector<int64_t> shape) { return at::empty(shape, at::kDouble).normal_(0, 1, gen); };

  MlpConfig mc;
  mc.input_dim = 12;
  mc.hidden = {16, 8};
  mc.output_dim = 5;
  const at::Tensor xm = normal({4, 12});
  gpu_test("mlp on cuda:0: JVP, linearized forward and gradient = float64 CPU",
           [&] { check_model("mlp", [&](at::ScalarType dt, at::Device d) { return make_mlp(mc, 1, dt, d); }, xm, dev); });
  CnnConfig cc;
  cc.in_channels = 2;
  cc.image_size = 8;
  cc.channels = {4, 6};
  cc.output_dim = 5;
  const at::Tensor xc = normal({3, 2, 8, 8});
  gpu_test("cnn on cuda:0: JVP, linearized forward and gradient = float64 CPU",
           [&] { check_model("cnn", [&](at::ScalarType dt, at::Device d) { return make_cnn(cc, 2, dt, d); }, xc, dev); });
  const VitConfig vc = vit_config(8, 16, 2, 2, 24, 5);
  const at::Tensor xv = normal({3, 1, 8, 8});
  gpu_test("vit on cuda:0: hand-written and forward-mode JVP, linearized forward and gradient = float64 CPU",
           [&] { check_model("vit", [&](at::ScalarType dt, at::Device d) { return make_vit(vc, 3, dt, d); }, xv, dev); });
  gpu_test("merges (every registered method) on cuda:0 = CPU", [&] { check_merges(dev); });
  gpu_test("file-to-file merges on cuda:0 (tangent merge --device cuda) = the CPU's", [&] { check_merge_files_on(dev); });
  gpu_test("empirical NTK on cuda:0 = CPU", [&] { check_ntk(dev); });
  if (skip_reason.empty() && !distributed_backend_available("nccl")) {
    std::printf("ok NCCL group over the GPUs present # SKIP this libtorch has no NCCL\n");
    ++skipped;
  } else {
    gpu_test("NCCL group over the GPUs present: all-reduce and broadcast", [&] { check_nccl(gpus); });
  }
  if (want_bench) {
    if (skip_reason.empty())
      bench(dev, reps);
    else
      std::printf("# bench skipped: %s\n", skip_reason.c_str());
  }
  std::printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
  return failed == 0 ? 0 : 1;
}
