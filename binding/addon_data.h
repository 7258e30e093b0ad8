#pragma once

#include <atomic>
#include <map>
#include <thread>

#include "common.h"

namespace tangent_js {

struct AddonData {
  std::map<std::string, Napi::FunctionReference> error_ctors;
  Napi::FunctionReference tensor_ctor;
  // Releases references to JS ArrayBuffers that back zero-copy tensors, on the JS thread,
  // whichever thread frees the tensor's storage.
  Napi::ThreadSafeFunction release_tsfn;
  std::thread::id main_thread = std::this_thread::get_id();
  std::atomic<bool> closing{false};
};

}  // namespace tangent_js
