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
  check(x.dim() >= 1 && x.size(0) >= 1, ErrorKind::Shape, kind(), " model got an empty batch (input ",
        shape_str(x.sizes()), "): the batch must hold at least one sample");
  check(x.scalar_type() == dtype_, ErrorKind::DType, kind(), " model expects input dtype ",
        c10::toString(dtype_), ", got ", c10::toString(x.scalar_type()));
  if (!params_.empty()) {
    const auto dev = params_.front().second.device();
    check(x.device() == dev, ErrorKind::Device, "input is on ", x.device().str(), ", ", kind(),
          " model is on ", dev.str());
  }
}

at::Tensor Model::forward_inputs(const std::vector<at::Tensor>& state,
                                 const std::vector<at::Tensor>& inputs) const {
  check(inputs.size() == 1, ErrorKind::Argument, kind(), " model takes one input, got ", inputs.size());
  return forward(state, inputs[0]);
}

namespace {

// with_inputs(): the model's parameters and buffers, and a forward that appends the extra inputs.
class WithInputs final : public Model {
 public:
  WithInputs(ModelPtr base, std::vector<at::Tensor> extra) : base_(std::move(base)), extra_(std::move(extra)) {
    const size_t given = 1 + extra_.size();
    check(given >= base_->num_required_inputs() && given <= base_->num_inputs(), ErrorKind::Argument,
          base_->kind(), " model's forward takes ", base_->num_required_inputs() == base_->num_inputs()
              ? std::to_string(base_->num_inputs())
              : std::to_string(base_->num_required_inputs()) + " to " + std::to_string(base_->num_inputs()),
          " input(s) (", base_->input_names(), "), got ", given);
    for (const auto& p : base_->parameters()) add_parameter(p.first, p.second);
    for (const auto& b : base_->buffers()) add_buffer(b.first, b.second);
    if (!base_->parameters().empty()) dtype_ = base_->parameters().front().second.scalar_type();
  }
  std::string kind() const override { return base_->kind(); }
  void check_input(const at::Tensor& x) const override {
    base_->check_input(x);
    for (size_t i = 0; i < extra_.size(); ++i)
      check(!extra_[i].defined() || extra_[i].device() == x.device(), ErrorKind::Device, "input ", i + 1,
            " is on ", extra_[i].device().str(), ", input 0 is on ", x.device().str());
  }
  at::Tensor forward(const std::vector<at::Tensor>& state, const at::Tensor& x) const override {
    std::vector<at::Tensor> inputs{x};
    inputs.insert(inputs.end(), extra_.begin(), extra_.end());
    return base_->forward_inputs(state, inputs);
  }

 private:
  ModelPtr base_;
  std::vector<at::Tensor> extra_;
};

// with_state(): another model's architecture with its own θ0 (and buffers) replaced.
class WithState final : public Model {
 public:
  WithState(ModelPtr base, const NamedTensors& given) : base_(std::move(base)) {
    const std::vector<at::Tensor> s = base_->resolve(given);
    const auto& ps = base_->parameters();
    const auto& bs = base_->buffers();
    for (size_t i = 0; i < ps.size(); ++i) add_parameter(ps[i].first, s[i]);
    for (size_t i = 0; i < bs.size(); ++i) add_buffer(bs[i].first, s[ps.size() + i]);
    if (!ps.empty()) dtype_ = ps.front().second.scalar_type();
  }
  std::string kind() const override { return base_->kind(); }
  void check_input(const at::Tensor& x) const override { base_->check_input(x); }
  size_t num_inputs() const override { return base_->num_inputs(); }
  size_t num_required_inputs() const override { return base_->num_required_inputs(); }
  std::string input_names() const override { return base_->input_names(); }
  at::Tensor forward(const std::vector<at::Tensor>& state, const at::Tensor& x) const override {
    return base_->forward(state, x);
  }
  at::Tensor forward_inputs(const std::vector<at::Tensor>& state,
                            const std::vector<at::Tensor>& inputs) const override {
    return base_->forward_inputs(state, inputs);
  }
  bool tangent_forward(const std::vector<at::Tensor>& state0, const std::vector<at::Tensor>& tangent,
                       const at::Tensor& x, at::Tensor& primal, at::Tensor& tangent_out) const override {
    return base_->tangent_forward(state0, tangent, x, primal, tangent_out);
  }

 private:
  ModelPtr base_;
};

}  // namespace

ModelPtr with_state(ModelPtr m, const NamedTensors& state) { return std::make_shared<WithState>(std::move(m), state); }

ModelPtr with_inputs(ModelPtr m, std::vector<at::Tensor> extra) {
  if (extra.empty()) return m;
  return std::make_shared<WithInputs>(std::move(m), std::move(extra));
}

}  // namespace tangent
