// The one place where libtorch versions differ (1.13 through 2.14). Everything else in native/ and
// binding/ is written once against the names defined here.
//
// - Grad mode: ATen/ATen.h brought at::NoGradGuard in 1.13; from 2.x it lives in
//   c10/core/GradMode.h as c10::NoGradGuard (at::NoGradGuard is an alias where it still exists).
// - c10d: in 1.13 ProcessGroupGloo/NCCL derive from c10d::ProcessGroup; from 2.x they derive from
//   c10d::Backend, and c10d::ProcessGroup is a dispatcher over backends. The collectives this project
//   calls (allreduce, broadcast, barrier, setSequenceNumberForGroup) exist on both, so a group holds
//   the backend directly: compat::C10dBackend.
// - init_process_group's store layout, which a rank of ours must share with PyTorch's ranks: 1.13
//   puts the default group's backend on PrefixStore("0", PrefixStore("default_pg", root)) and ends
//   with a store-based barrier on "store_based_barrier_key:1"; 2.x on
//   PrefixStore("<device>/", PrefixStore("0/", PrefixStore("default_pg", root))) (device "cpu" for
//   Gloo, "cuda" for NCCL), with the barrier (key "store_based_barrier_key:0") only when
//   TORCH_DIST_INIT_BARRIER=1 (read off torch/distributed/distributed_c10d.py of 1.13, 2.13, 2.14).
// - Forward-mode AD through attention: 2.x's nn.MultiheadAttention calls scaled_dot_product_attention,
//   whose fused kernels (flash, memory-efficient, cuDNN) have no forward derivative; its math path
//   is composite and has one. compat::MathAttentionGuard selects it while a dual level is open.
#pragma once

#include <ATen/Context.h>
#include <c10/core/GradMode.h>
#include <torch/version.h>

#include <cstdlib>
#include <string>
#include <vector>

#define TANGENT_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace c10d {
class Backend;
class ProcessGroup;
}  // namespace c10d

namespace tangent {
namespace compat {

using NoGradGuard = c10::NoGradGuard;

// The libtorch these headers are, as "2.13.0": the loader checks the library it runs on against it.
#define TANGENT_STR2(x) #x
#define TANGENT_STR(x) TANGENT_STR2(x)
inline const char* torch_header_version() {
  return TANGENT_STR(TORCH_VERSION_MAJOR) "." TANGENT_STR(TORCH_VERSION_MINOR) "." TANGENT_STR(TORCH_VERSION_PATCH);
}

// What a Gloo or NCCL process group is an instance of (see the top of this file).
#if TANGENT_TORCH_AT_LEAST(2, 0)
using C10dBackend = c10d::Backend;
#else
using C10dBackend = c10d::ProcessGroup;
#endif

// Selects scaled_dot_product_attention's math path for its lifetime (the fused kernels off), then
// restores the user's settings. A process-wide setting: held only under the forward-AD lock, and
// other calls run on the same compute thread (binding/compute_thread.h), so none sees it.
class MathAttentionGuard {
 public:
#if TANGENT_TORCH_AT_LEAST(2, 0)
  MathAttentionGuard()
      : flash_(at::globalContext().userEnabledFlashSDP()),
        mem_(at::globalContext().userEnabledMemEfficientSDP()),
        cudnn_(at::globalContext().userEnabledCuDNNSDP()),
        math_(at::globalContext().userEnabledMathSDP()) {
    at::globalContext().setSDPUseFlash(false);
    at::globalContext().setSDPUseMemEfficient(false);
    at::globalContext().setSDPUseCuDNN(false);
    at::globalContext().setSDPUseMath(true);
  }
  ~MathAttentionGuard() {
    at::globalContext().setSDPUseFlash(flash_);
    at::globalContext().setSDPUseMemEfficient(mem_);
    at::globalContext().setSDPUseCuDNN(cudnn_);
    at::globalContext().setSDPUseMath(math_);
  }

 private:
  bool flash_, mem_, cudnn_, math_;
#endif
  MathAttentionGuard(const MathAttentionGuard&) = delete;
  MathAttentionGuard& operator=(const MathAttentionGuard&) = delete;

 public:
#if !TANGENT_TORCH_AT_LEAST(2, 0)
  MathAttentionGuard() = default;
#endif
};

struct DefaultGroupLayout {
  std::vector<std::string> prefixes;  // under PrefixStore("default_pg", root), outermost first
  bool barrier;                       // the store-based barrier after the backend is built
  std::string barrier_key;            // on the "default_pg" store
};

inline DefaultGroupLayout default_group_layout(const std::string& backend) {
#if TANGENT_TORCH_AT_LEAST(2, 0)
  const char* b = std::getenv("TORCH_DIST_INIT_BARRIER");
  return {{"0/", backend == "nccl" ? "cuda/" : "cpu/"}, b != nullptr && std::string(b) == "1", "store_based_barrier_key:0"};
#else
  (void)backend;
  return {{"0"}, true, "store_based_barrier_key:1"};
#endif
}

}  // namespace compat
}  // namespace tangent
