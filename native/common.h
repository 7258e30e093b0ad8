// tangent-edit native core: shared types and errors. libtorch only, no Node headers.
#pragma once

#include <ATen/ATen.h>

#include "compat.h"

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tangent {

// Ordered name -> tensor list. Order is the model's declaration order where it matters.
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Kinds of errors the native core raises; the binding turns each into a typed JS error.
enum class ErrorKind { Argument, Shape, DType, Device, Parameter, IO, State, Unsupported };

const char* error_kind_name(ErrorKind k);

struct Error : public std::runtime_error {
  Error(ErrorKind kind, const std::string& msg) : std::runtime_error(msg), kind(kind) {}
  ErrorKind kind;
};

// Build a message from streamable parts: fail(ErrorKind::Shape, "expected ", shape).
template <typename... Args>
[[noreturn]] void fail(ErrorKind kind, const Args&... args) {
  std::ostringstream ss;
  (ss << ... << args);
  throw Error(kind, ss.str());
}

template <typename... Args>
inline void check(bool cond, ErrorKind kind, const Args&... args) {
  if (!cond) fail(kind, args...);
}

std::string shape_str(at::IntArrayRef sizes);

}  // namespace tangent
