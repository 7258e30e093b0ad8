#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/lower_graph.h>
#include <torch/csrc/jit/runtime/interpreter.h>
#include <torch/script.h>

#include <unordered_map>

#include "../model.h"

namespace tangent {
namespace {

// A TorchScript module whose forward graph is inlined and lowered (torch::jit::LowerGraph) so that
// every tensor attribute it reads becomes an explicit input; the graph then runs in the JIT
// interpreter op by op (no fusion, no profiling), so forward-mode AD and autograd see plain ATen
// ops, and any parameter set can be fed without touching the module.
class TorchScriptModel final : public Model {
 public:
  TorchScriptModel(const std::string& path, at::Device device) : path_(path) {
    try {
      module_ = torch::jit::load(path, device);
    } catch (const c10::Error& e) {
      fail(ErrorKind::IO, "cannot load TorchScript module '", path, "': ", e.what_without_backtrace());
    }
    module_.eval();
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) add_parameter(p.name, p.value);
    for (const auto& b : module_.named_buffers(/*recurse=*/true)) add_buffer(b.name, b.value);
    if (!parameters().empty()) dtype_ = parameters().front().second.scalar_type();

    check(module_.find_method("forward").has_value(), ErrorKind::Argument, "TorchScript module '",
          path, "' has no forward method");
    auto graph = module_.get_method("forward").graph()->copy();
    torch::jit::Inline(*graph);
    auto lowered = torch::jit::LowerGraph(*graph, module_._ivalue());
    graph_ = lowered.first;
    num_inputs_ = graph_->inputs().size() - lowered.second.size();
    check(num_inputs_ == 1, ErrorKind::Argument, "TorchScript module '", path,
          "': forward must take exactly one tensor input, it takes ", num_inputs_);

    std::unordered_map<const c10::TensorImpl*, size_t> slot;  // tensor -> resolved-state index
    const auto own = own_state();
    for (size_t i = 0; i < own.size(); ++i) slot.emplace(own[i].unsafeGetTensorImpl(), i);
    for (const auto& v : lowered.second) {
      check(v.isTensor(), ErrorKind::Argument, "TorchScript module '", path,
            "': forward reads a non-tensor attribute that cannot be lowered");
      auto it = slot.find(v.toTensor().unsafeGetTensorImpl());
      if (it != slot.end()) {
        inputs_.push_back({it->second, at::Tensor()});
      } else {
        inputs_.push_back({SIZE_MAX, v.toTensor()});  // a plain tensor attribute: a constant
      }
    }
    code_ = std::make_unique<torch::jit::Code>(graph_, "forward");
  }

  std::string kind() const override { return "torchscript"; }

  at::Tensor forward(const std::vector<at::Tensor>& state, const at::Tensor& x) const override {
    torch::jit::Stack stack;
    stack.reserve(1 + inputs_.size());
    stack.emplace_back(x);
    for (const auto& in : inputs_) stack.emplace_back(in.index == SIZE_MAX ? in.constant : state[in.index]);
    torch::jit::InterpreterState(*code_).run(stack);
    check(!stack.empty() && stack.back().isTensor(), ErrorKind::Argument, "TorchScript module '",
          path_, "': forward must return one tensor");
    return stack.back().toTensor();
  }

 private:
  struct Input {
    size_t index;         // position in the resolved state, or SIZE_MAX for a constant
    at::Tensor constant;
  };
  std::string path_;
  torch::jit::Module module_;
  std::shared_ptr<torch::jit::Graph> graph_;
  std::unique_ptr<torch::jit::Code> code_;
  std::vector<Input> inputs_;
  size_t num_inputs_ = 0;
};

}  // namespace

ModelPtr load_torchscript(const std::string& path, at::Device device) {
  return std::make_shared<TorchScriptModel>(path, device);
}

}  // namespace tangent
