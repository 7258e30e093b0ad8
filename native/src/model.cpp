#include "../model.h"

namespace tangent {

void Model::add_parameter(std::string name, at::Tensor t) {
  TORCH_INTERNAL_ASSERT(buffers_.empty(), "parameters are declared before buffers");
  index_.emplace(name, params_.size());
  params_.emplace_back(std::move(name), std::move(t));
}

void Model::add_buffer(std::string name, at::Tensor t) {
  index_.emplace(name, params_.size() + buffers_.size());
  buffers_.emplace_back(std::move(name), std::move(t));
}

int64_t Model::parameter_index(const std::string& name) const {
  auto it = index_.find(name);
  return it != index_.end() && it->second < params_.size() ? static_cast<int64_t>(it->second) : -1;
}

int64_t Model::numel() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.second.numel();
  return n;
}

std::vector<at::Tensor> Model::own_state() const {
  std::vector<at::Tensor> out;
  out.reserve(params_.size() + buffers_.size());
  for (const auto& p : params_) out.push_back(p.second);
  for (const auto& b : buffers_) out.push_back(b.second);
  return out;
}

std::vector<at::Tensor> Model::resolve(const NamedTensors& given) const {
  const size_t np = params_.size();
  std::vector<at::Tensor> out(np + buffers_.size());
  for (const auto& kv : given) {
    auto it = index_.find(kv.first);
    if (it == index_.end())
      fail(ErrorKind::Parameter, "unknown parameter '", kv.first, "' for ", kind(), " model");
    const size_t pos = it->second;
    const at::Tensor& ref = pos >= np ? buffers_[pos - np].second : params_[pos].second;
    const at::Tensor& t = kv.second;
    check(t.defined(), ErrorKind::Parameter, "parameter '", kv.first, "' is undefined");
    check(!out[pos].defined(), ErrorKind::Parameter, "parameter '", kv.first, "' given twice");
    check(t.sizes() == ref.sizes(), ErrorKind::Shape, "parameter '", kv.first, "' has shape ",
          shape_str(t.sizes()), ", model expects ", shape_str(ref.sizes()));
    check(t.scalar_type() == ref.scalar_type(), ErrorKind::DType, "parameter '", kv.first,
          "' has dtype ", c10::toString(t.scalar_type()), ", model expects ",
          c10::toString(ref.scalar_type()));
    check(t.device() == ref.device(), ErrorKind::Device, "parameter '", kv.first, "' is on ",
          t.device().str(), ", model is on ", ref.device().str());
    out[pos] = t;
  }
  for (size_t i = 0; i < np; ++i)
    check(out[i].defined(), ErrorKind::Parameter, "missing parameter '", params_[i].first, "'");
  for (size_t i = 0; i < buffers_.size(); ++i)
    if (!out[np + i].defined()) out[np + i] = buffers_[i].second;
  return out;
}

void Model::check_input(const at::Tensor& x) const {
  check(x.defined(), ErrorKind::Argument, "input is undefined");
  check(x.scalar_type() == dtype_, ErrorKind::DType, kind(), " model expects input dtype ",
        c10::toString(dtype_), ", got ", c10::toString(x.scalar_type()));
  if (!params_.empty()) {
    const auto dev = params_.front().second.device();
    check(x.device() == dev, ErrorKind::Device, "input is on ", x.device().str(), ", ", kind(),
          " model is on ", dev.str());
  }
}

}  // namespace tangent
