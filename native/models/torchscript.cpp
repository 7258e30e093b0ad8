// TorchScript modules (scripted or traced) with a functional forward.
//
// Loading lowers the module's forward into a graph that reads no module state:
//   1. Inline every method call.
//   2. Resolve every attribute the graph reads, starting from `self`: submodules are followed;
//      tensors (parameters, buffers, plain tensor attributes) become explicit graph inputs;
//      plain values (int, float, bool, str, None, devices, lists/tuples of them) become constants
//      of the loaded, eval-mode module. Anything else is an UnsupportedError naming the attribute.
//   3. Constant propagation and dead-code elimination fold the branches those constants decide
//      (`if self.training`, optional biases), so dropout is the identity and batch norm uses its
//      running statistics, as in PyTorch's eval mode.
//   4. The module itself must no longer be used (no attribute assignment, no module passed to a
//      function); non-tensor forward arguments take their declared defaults; a tuple, list or dict
//      result is narrowed to the element chosen at load.
// Unlike torch::jit::freeze_module, buffers stay graph inputs (they can be overridden like
// parameters, and BatchNorm statistics are read, never baked in) and no other optimisation pass
// runs, so the arithmetic is PyTorch's own op for op.
//
// Two executables come out of one lowered graph. The plain one keeps the module's run-time
// queries of the autograd state (aten::is_grad_enabled, prim::requires_grad), so an inference
// forward takes the same fast paths as PyTorch (e.g. nn.MultiheadAttention's fused kernel). The
// differentiable one answers those queries with `true` and drops the branches they guard: it is
// what JVPs, linearized forwards and gradients run, because fused inference kernels generally have
// no forward-mode derivative, and a differentiated forward is what those queries ask about.
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/lower_tuples.h>
#include <torch/csrc/jit/runtime/interpreter.h>
#include <torch/script.h>

#include <functional>
#include <unordered_map>

#include "../model.h"

namespace tangent {
namespace {

using torch::jit::Graph;
using torch::jit::Node;
using torch::jit::Value;
namespace attr = torch::jit::attr;
namespace prim = torch::jit::prim;
namespace aten = torch::jit::aten;

// A plain value that can be folded into the graph as a constant: no tensors, no objects.
bool is_plain(const c10::IValue& v) {
  if (v.isNone() || v.isInt() || v.isDouble() || v.isBool() || v.isString() || v.isDevice())
    return true;
  if (v.isIntList() || v.isDoubleList() || v.isBoolList()) return true;
  if (v.isList()) {
    for (const auto& e : v.toListRef())
      if (!is_plain(e)) return false;
    return true;
  }
  if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements())
      if (!is_plain(e)) return false;
    return true;
  }
  return false;
}

bool is_module_value(const Value* v) {
  auto cls = v->type()->cast<c10::ClassType>();
  return cls && cls->is_module();
}

void for_each_node(torch::jit::Block* b, const std::function<void(Node*)>& fn) {
  for (Node* n : b->nodes()) {
    fn(n);
    for (auto* sub : n->blocks()) for_each_node(sub, fn);
  }
}

std::string type_str(const c10::TypePtr& t) { return t->annotation_str(); }

const c10::Symbol kIsGradEnabled = c10::Symbol::fromQualString("aten::is_grad_enabled");

constexpr const char* kTraceHint =
    "; export the module with torch.jit.trace(model.eval(), example_input) instead, which records "
    "only tensor operations";

class TorchScriptModel final : public Model {
 public:
  TorchScriptModel(const std::string& path, at::Device device, const TorchScriptOptions& opts)
      : path_(path) {
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
    auto method = module_.get_method("forward");
    auto graph = method.graph()->copy();
    torch::jit::Inline(*graph);
    lower_attributes(graph);
    fold_arguments(graph, method.function().getSchema());
    select_output(graph, opts);

    auto diff = graph->copy();
    answer_grad_queries(diff);
    plain_ = std::make_unique<torch::jit::Code>(graph, "forward");
    diff_ = std::make_unique<torch::jit::Code>(diff, "forward");
    graph_ = graph;
  }

  std::string kind() const override { return "torchscript"; }
  size_t num_inputs() const override { return input_names_.size(); }
  size_t num_required_inputs() const override { return required_inputs_; }
  std::string input_names() const override {
    std::string s;
    for (size_t i = 0; i < input_names_.size(); ++i) s += (i ? ", " : "") + input_names_[i];
    return s;
  }

  at::Tensor forward(const std::vector<at::Tensor>& state, const at::Tensor& x) const override {
    return forward_inputs(state, {x});
  }

  at::Tensor forward_inputs(const std::vector<at::Tensor>& state,
                            const std::vector<at::Tensor>& inputs) const override {
    check_input_count(inputs.size());
    torch::jit::Stack stack;
    stack.reserve(input_names_.size() + attrs_.size());
    for (size_t i = 0; i < input_names_.size(); ++i) {
      if (i < inputs.size() && inputs[i].defined())
        stack.emplace_back(inputs[i]);
      else
        stack.emplace_back(c10::IValue());  // an Optional[Tensor] argument left out: None
    }
    bool differentiating = at::GradMode::is_enabled();
    for (const auto& in : attrs_) {
      const at::Tensor& t = in.index == SIZE_MAX ? in.constant : state[in.index];
      if (!differentiating && in.index != SIZE_MAX && t._fw_grad(/*level=*/0).defined())
        differentiating = true;
      stack.emplace_back(t);
    }
    try {
      torch::jit::InterpreterState(differentiating ? *diff_ : *plain_).run(stack);
    } catch (const c10::Error& e) {
      if (differentiating) explain_missing_derivative(e);
      throw;
    }
    check(stack.size() == 1 && stack.back().isTensor(), ErrorKind::Argument, "TorchScript module '",
          path_, "': forward did not return a tensor");
    return stack.back().toTensor();
  }

 private:
  // Step 2 and 3 of the file comment: every attribute read becomes a graph input or a constant.
  void lower_attributes(std::shared_ptr<Graph>& graph) {
    std::unordered_map<const c10::TensorImpl*, size_t> slot;  // tensor -> resolved-state index
    const auto own = own_state();
    for (size_t i = 0; i < own.size(); ++i) slot.emplace(own[i].unsafeGetTensorImpl(), i);
    std::unordered_map<const c10::TensorImpl*, Value*> tensor_inputs;
    std::unordered_map<const Value*, std::string> module_paths;

    std::function<void(Value*, const c10::intrusive_ptr<c10::ivalue::Object>&, const std::string&)>
        visit = [&](Value* v, const c10::intrusive_ptr<c10::ivalue::Object>& obj, const std::string& prefix) {
          module_paths[v] = prefix.empty() ? "self" : prefix.substr(0, prefix.size() - 1);
          const auto uses = v->uses();
          for (const auto& use : uses) {
            Node* n = use.user;
            if (n->kind() != prim::GetAttr) continue;  // reported below if it survives folding
            const std::string name = n->s(attr::name);
            const std::string where = prefix + name;
            const c10::IValue a = obj->getAttr(name);
            Value* out = n->output();
            if (a.isObject() && a.toObjectRef().type()->is_module()) {
              visit(out, a.toObject(), where + ".");
              continue;
            }
            Value* repl = nullptr;
            if (a.isTensor()) {
              const at::Tensor& t = a.toTensor();
              auto it = tensor_inputs.find(t.unsafeGetTensorImpl());
              if (it == tensor_inputs.end()) {
                repl = graph->addInput(where)->setType(c10::TensorType::get());
                auto s = slot.find(t.unsafeGetTensorImpl());
                attrs_.push_back(s != slot.end() ? Input{s->second, at::Tensor()} : Input{SIZE_MAX, t});
                tensor_inputs.emplace(t.unsafeGetTensorImpl(), repl);
              } else {
                repl = it->second;
              }
            } else if (is_plain(a)) {
              torch::jit::WithInsertPoint guard(n);
              auto c = torch::jit::tryInsertConstant(*graph, a);
              if (!c) unsupported_attribute(where, out->type());
              repl = *c;
            } else {
              unsupported_attribute(where, out->type());
            }
            out->replaceAllUsesWith(repl);
            n->destroy();
          }
        };
    visit(graph->inputs()[0], module_._ivalue(), "");

    torch::jit::ConstantPropagation(graph);
    torch::jit::EliminateDeadCode(graph);

    // What still uses a module value is something a functional forward cannot do.
    for_each_node(graph->block(), [&](Node* n) {
      if (n->kind() == prim::GetAttr) return;
      for (Value* in : n->inputs()) {
        if (!is_module_value(in)) continue;
        auto p = module_paths.find(in);
        const std::string who = p != module_paths.end() ? p->second : type_str(in->type());
        if (n->kind() == prim::SetAttr)
          fail(ErrorKind::Unsupported, "TorchScript module '", path_, "': forward assigns attribute '",
               who == "self" ? "" : who + ".", n->s(attr::name),
               "' (prim::SetAttr); a functional forward cannot change module state — remove the "
               "assignment, or make it depend on self.training only", kTraceHint);
        fail(ErrorKind::Unsupported, "TorchScript module '", path_, "': forward passes module '", who,
             "' to ", n->kind().toQualString(),
             "; only reading its attributes and calling its methods is supported", kTraceHint);
      }
    });
    // Every module-valued GetAttr is now unused; drop them and the `self` argument.
    torch::jit::EliminateDeadCode(graph);
    check(!graph->inputs()[0]->hasUses(), ErrorKind::Unsupported, "TorchScript module '", path_,
          "': forward uses the module itself beyond reading its attributes", kTraceHint);
    graph->eraseInput(0);
  }

  [[noreturn]] void unsupported_attribute(const std::string& where, const c10::TypePtr& type) const {
    fail(ErrorKind::Unsupported, "TorchScript module '", path_, "': forward reads attribute '", where,
         "' of type ", type_str(type),
         ", which is neither a tensor, a submodule, nor a plain value (None, int, float, bool, str, "
         "device, or a list/tuple of them); register its tensors as parameters or buffers",
         kTraceHint);
  }

  // Tensor arguments stay inputs; other arguments take their declared default as a constant.
  void fold_arguments(std::shared_ptr<Graph>& graph, const c10::FunctionSchema& schema) {
    const auto& args = schema.arguments();  // args[0] is self
    const size_t n_user = graph->inputs().size() - attrs_.size();
    for (size_t i = n_user; i-- > 0;) {
      Value* in = graph->inputs()[i];
      const auto& arg = args.at(i + 1);
      const auto& t = in->type();
      if (t->isSubtypeOf(*c10::TensorType::get())) continue;
      auto opt = t->cast<c10::OptionalType>();
      if (opt && opt->getElementType()->isSubtypeOf(*c10::TensorType::get())) continue;
      if (arg.default_value().has_value()) {
        torch::jit::WithInsertPoint guard(graph->block()->nodes().front());
        auto c = torch::jit::tryInsertConstant(*graph, *arg.default_value());
        if (c) {
          in->replaceAllUsesWith(*c);
          graph->eraseInput(i);
          continue;
        }
      }
      fail(ErrorKind::Unsupported, "TorchScript module '", path_, "': forward argument '", arg.name(),
           "' has type ", type_str(t),
           " and no default; only tensor (or Optional[Tensor]) arguments can be fed — give it a "
           "default value, or make it a module attribute");
    }
    const size_t n = graph->inputs().size() - attrs_.size();
    bool optional_seen = false;
    for (size_t i = 0; i < n; ++i) {
      const bool optional = graph->inputs()[i]->type()->cast<c10::OptionalType>() != nullptr;
      if (!optional && !optional_seen) required_inputs_ = i + 1;
      optional_seen = optional_seen || optional;
      input_names_.push_back(args.at(i + 1).name());
    }
    check(n >= 1, ErrorKind::Unsupported, "TorchScript module '", path_,
          "': forward takes no tensor argument");
    fold_constants(graph);
  }

  static void fold_constants(std::shared_ptr<Graph>& graph) {
    torch::jit::ConstantPropagation(graph);
    torch::jit::EliminateDeadCode(graph);
  }

  // A tuple, list or dict result narrowed to the chosen element.
  void select_output(std::shared_ptr<Graph>& graph, const TorchScriptOptions& opts) {
    check(graph->outputs().size() == 1, ErrorKind::Unsupported, "TorchScript module '", path_,
          "': forward returns ", graph->outputs().size(), " values");
    Value* out = graph->outputs()[0];
    const auto type = out->type();
    const bool chosen = opts.output_index >= 0 || !opts.output_key.empty();
    const std::string choose = opts.output_key.empty() ? std::to_string(opts.output_index)
                                                       : "'" + opts.output_key + "'";
    if (type->isSubtypeOf(*c10::TensorType::get())) {
      check(!chosen, ErrorKind::Argument, "TorchScript module '", path_,
            "': forward returns a single tensor; the output option (", choose, ") does not apply");
      return;
    }
    Value* sel = nullptr;
    torch::jit::WithInsertPoint guard(graph->return_node());
    if (auto tup = type->cast<c10::TupleType>()) {
      int64_t idx = opts.output_index;
      std::vector<std::string> names;
      if (auto n = tup->names())
        for (const auto& v : *n) names.emplace_back(v.data(), v.size());
      if (!opts.output_key.empty()) {
        idx = -1;
        for (size_t i = 0; i < names.size(); ++i)
          if (names[i] == opts.output_key) idx = static_cast<int64_t>(i);
      }
      const int64_t size = static_cast<int64_t>(tup->elements().size());
      check(chosen && idx >= 0 && idx < size, ErrorKind::Argument, "TorchScript module '", path_,
            "': forward returns ", type_str(type), "; choose one tensor with the output option (",
            names.empty() ? "an index 0.." + std::to_string(size - 1) : "an index or a field name",
            ")", chosen ? ", got " + choose : "");
      sel = graph->insertNode(graph->createTupleIndex(out, graph->insertConstant(idx), tup->elements()[idx]))
                ->output();
    } else if (auto list = type->cast<c10::ListType>()) {
      check(opts.output_index >= 0, ErrorKind::Argument, "TorchScript module '", path_,
            "': forward returns ", type_str(type), "; choose one tensor with the output option (an index)",
            chosen ? ", got " + choose : "");
      sel = graph->insert(aten::__getitem__, {out, opts.output_index});
    } else if (auto dict = type->cast<c10::DictType>()) {
      check(!opts.output_key.empty() && dict->getKeyType()->kind() == c10::TypeKind::StringType,
            ErrorKind::Argument, "TorchScript module '", path_, "': forward returns ", type_str(type),
            "; choose one tensor with the output option (a key)", chosen ? ", got " + choose : "");
      Node* make = out->node();
      if (make->kind() == prim::DictConstruct) {  // constant keys: check the choice now
        std::string keys;
        for (size_t i = 0; i + 1 < make->inputs().size(); i += 2) {
          auto k = torch::jit::toIValue(make->input(i));
          if (!k || !k->isString()) {
            keys.clear();
            break;
          }
          keys += (keys.empty() ? "'" : ", '") + k->toStringRef() + "'";
          if (k->toStringRef() == opts.output_key) sel = make->input(i + 1);
        }
        check(sel || keys.empty(), ErrorKind::Argument, "TorchScript module '", path_,
              "': forward returns a dict with keys ", keys, "; the output option ", choose, " is none of them");
      }
      if (!sel) sel = graph->insert(aten::__getitem__, {out, opts.output_key});
    } else {
      fail(ErrorKind::Unsupported, "TorchScript module '", path_, "': forward returns ", type_str(type),
           "; a tensor, or a tuple, list or dict of tensors (with the output option) is supported");
    }
    check(sel->type()->isSubtypeOf(*c10::TensorType::get()), ErrorKind::Unsupported,
          "TorchScript module '", path_, "': output ", choose, " of forward has type ",
          type_str(sel->type()), ", not Tensor");
    graph->eraseOutput(0);
    graph->registerOutput(sel);
    torch::jit::LowerSimpleTuples(graph);
    fold_constants(graph);
  }

  // The differentiable executable: autograd-state queries answer `true` (see the file comment).
  static void answer_grad_queries(std::shared_ptr<Graph>& graph) {
    std::vector<Node*> queries;
    for_each_node(graph->block(), [&](Node* n) {
      if (n->kind() == kIsGradEnabled || n->kind() == prim::requires_grad) queries.push_back(n);
    });
    if (queries.empty()) return;
    Value* yes;
    {
      torch::jit::WithInsertPoint guard(graph->block()->nodes().front());
      yes = graph->insertConstant(true);
    }
    for (Node* n : queries) {
      n->output()->replaceAllUsesWith(yes);
      n->destroy();
    }
    fold_constants(graph);
  }

  void check_input_count(size_t given) const {
    check(given >= required_inputs_ && given <= input_names_.size(), ErrorKind::Argument,
          "TorchScript module '", path_, "': forward takes ",
          required_inputs_ == input_names_.size() ? std::to_string(required_inputs_)
                                                  : std::to_string(required_inputs_) + " to " +
                                                        std::to_string(input_names_.size()),
          " tensor input(s) (", input_names(), "), got ", given,
          given < required_inputs_ ? "; pass several inputs as an array" : "");
  }

  // An op without a forward-mode derivative, named, with the usual cause and its remedy.
  void explain_missing_derivative(const c10::Error& e) const {
    const std::string msg = e.what_without_backtrace();
    const std::string key = "Trying to use forward AD with ";
    const size_t at = msg.find(key);
    if (at == std::string::npos) return;
    const size_t start = at + key.size();
    const std::string op = msg.substr(start, msg.find(' ', start) - start);
    fail(ErrorKind::Unsupported, "TorchScript module '", path_, "': ", op,
         " has no forward-mode derivative in this libtorch, so JVPs, linearized forwards and "
         "linearized steps cannot run through it (plain forwards and gradients can). A module traced "
         "under torch.no_grad() records fused inference kernels such as "
         "aten::_native_multi_head_attention: trace it with gradients enabled "
         "(torch.jit.trace(model.eval(), x, check_trace=False)) or script it (torch.jit.script), "
         "which keeps the differentiable path");
  }

  struct Input {
    size_t index;         // position in the resolved state, or SIZE_MAX for a constant
    at::Tensor constant;
  };
  std::string path_;
  torch::jit::Module module_;
  std::shared_ptr<Graph> graph_;
  std::unique_ptr<torch::jit::Code> plain_, diff_;
  std::vector<Input> attrs_;
  std::vector<std::string> input_names_;
  size_t required_inputs_ = 0;
};

}  // namespace

ModelPtr load_torchscript(const std::string& path, at::Device device, const TorchScriptOptions& opts) {
  try {
    return std::make_shared<TorchScriptModel>(path, device, opts);
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    fail(ErrorKind::Unsupported, "TorchScript module '", path, "' cannot be lowered to a functional forward: ",
         e.what_without_backtrace(), kTraceHint);
  }
}

}  // namespace tangent
