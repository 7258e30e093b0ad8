// The one place where libtorch versions differ (1.13 through 2.14). Everything else in native/ and
// binding/ is written once against the names defined here.
//
// - Grad mode: ATen/ATen.h brought at::NoGradGuard in 1.13; from 2.x it lives in
//   c10/core/GradMode.h as c10::NoGradGuard (at::NoGradGuard is an alias where it still exists).
// - c10d: in 1.13 ProcessGroupGloo/NCCL derive from c10d::ProcessGroup; from 2.x they derive from
//   c10d::Backend, and c10d::ProcessGroup is a dispatcher over backends. The collectives this project
//   calls (allreduce, broadcast, barrier, setSequenceNumberForGroup) exist on both, so a group holds
//   the backend directly: compat::C10dBackend.
#pragma once

#include <c10/core/GradMode.h>
#include <torch/version.h>

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

}  // namespace compat
}  // namespace tangent
