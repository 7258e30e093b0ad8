#pragma once

#include <map>

#include "common.h"

namespace tangent_js {

// Everything the addon keeps per JS environment (the main thread and each worker thread load
// their own instance): no JS handle lives in a static, so environments never touch each other's
// handles. Owned by the environment (Napi::Env::SetInstanceData), freed with it.
struct AddonData {
  std::map<std::string, Napi::FunctionReference> error_ctors;
  Napi::FunctionReference tensor_ctor;
  Napi::FunctionReference model_ctor;
};

}  // namespace tangent_js
