#include "../common.h"

namespace tangent {

const char* error_kind_name(ErrorKind k) {
  switch (k) {
    case ErrorKind::Argument: return "ArgumentError";
    case ErrorKind::Shape: return "ShapeError";
    case ErrorKind::DType: return "DTypeError";
    case ErrorKind::Device: return "DeviceError";
    case ErrorKind::Parameter: return "ParameterError";
    case ErrorKind::IO: return "CheckpointError";
    case ErrorKind::State: return "StateError";
    case ErrorKind::Unsupported: return "UnsupportedError";
  }
  return "TangentError";
}

std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream ss;
  ss << "[";
  for (size_t i = 0; i < sizes.size(); ++i) ss << (i ? ", " : "") << sizes[i];
  ss << "]";
  return ss.str();
}

}  // namespace tangent
