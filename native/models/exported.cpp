// torch.export programs (.pt2) with a functional forward.
//
// The archive is read, parsed and checked as data in TypeScript (lib/checkpoint/pt2.ts): nothing
// in it is executed — not its pickle, not its guards code. What arrives here is a list of nodes,
// each naming an operator by schema name and overload and feeding it values (tensors and symbolic
// ints, numbered) and constants. Loading checks every node against its operator's schema as the
// c10 dispatcher holds it:
//   - the operator must exist in this libtorch (namespaces aten and prims only; the TypeScript
//     reader refuses every other namespace before anything reaches C++), plus the handful of
//     symbolic-int builtins export emits for dynamic shapes (`aten::sym_size.int`, `_operator.mul`…);
//   - every argument must be one of the schema's, every required one given, defaults filled in,
//     and constants coerced to the schema's types (an int literal for a float argument);
//   - no node may call an operator that reaches outside the program (aten::from_file);
//   - no node may write in place to a parameter, buffer or user input, nor to a view of one (the
//     forward must be functional); in-place ops on intermediate values are fine.
// Running is one pass over the nodes with callBoxed: ATen's own kernels, with autograd and
// forward-mode AD where ATen has them, so JVPs, linearized forwards and gradients need nothing
// more. Each value is dropped after its last use.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "../compat.h"
#include "../model.h"

namespace tangent {
namespace {

enum class Builtin { None, SymSize, SymNumel, SymStride, SymStorageOffset, Add, Sub, Mul, FloorDiv, Mod, Neg, Eq, Ne, Lt, Le, Gt, Ge };

Builtin builtin_of(const std::string& target) {
  static const std::unordered_map<std::string, Builtin> table{
      {"aten::sym_size.int", Builtin::SymSize},       {"aten::sym_numel.default", Builtin::SymNumel},
      {"aten::sym_stride.int", Builtin::SymStride},   {"aten::sym_storage_offset.default", Builtin::SymStorageOffset},
      {"_operator.add", Builtin::Add},                {"_operator.sub", Builtin::Sub},
      {"_operator.mul", Builtin::Mul},                {"_operator.floordiv", Builtin::FloorDiv},
      {"_operator.mod", Builtin::Mod},                {"_operator.neg", Builtin::Neg},
      {"_operator.eq", Builtin::Eq},                  {"_operator.ne", Builtin::Ne},
      {"_operator.lt", Builtin::Lt},                  {"_operator.le", Builtin::Le},
      {"_operator.gt", Builtin::Gt},                  {"_operator.ge", Builtin::Ge},
  };
  auto it = table.find(target);
  return it == table.end() ? Builtin::None : it->second;
}

int64_t floor_div(int64_t a, int64_t b) {
  check(b != 0, ErrorKind::Argument, "integer division by zero in a symbolic shape");
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

struct Slot {
  ExportArg::Kind kind = ExportArg::Kind::Constant;
  c10::IValue constant;
  std::vector<int64_t> refs;
  std::vector<int64_t> literals;
};

struct Step {
  std::string name, target;
  Builtin builtin = Builtin::None;
  std::optional<c10::OperatorHandle> op;
  std::vector<Slot> slots;  // one per schema argument (builtins: in the node's order)
  std::vector<std::vector<int64_t>> outputs;
  std::vector<bool> list_output;
  std::vector<int64_t> release;  // values whose last read is this step
};

bool is_tensor_type(const c10::TypePtr& t) { return t->kind() == c10::TypeKind::TensorType; }

c10::TypePtr unwrap_optional(const c10::TypePtr& t) {
  if (auto o = t->cast<c10::OptionalType>()) return o->getElementType();
  return t;
}

// A constant in the type the schema declares (export writes `1` for a float argument of 1.0).
c10::IValue coerce(const c10::IValue& v, const c10::TypePtr& declared, at::Device device) {
  const c10::TypePtr t = unwrap_optional(declared);
  if (v.isNone()) return v;
  // A Python number where the schema takes a Tensor (`mul.Tensor(x, 0.5)`): a wrapped-number
  // tensor, as Python's binding makes it, so type promotion treats it as a scalar.
  if (is_tensor_type(t) && (v.isDouble() || v.isInt() || v.isBool())) {
    at::Tensor w = v.isDouble() ? at::scalar_tensor(v.toDouble(), at::kDouble)
                   : v.isInt()  ? at::scalar_tensor(v.toInt(), at::kLong)
                                : at::scalar_tensor(v.toBool(), at::kBool);
    w.unsafeGetTensorImpl()->set_wrapped_number(true);
    return c10::IValue(w);
  }
  if (t->kind() == c10::TypeKind::FloatType && v.isInt()) return c10::IValue(static_cast<double>(v.toInt()));
  if (auto l = t->cast<c10::ListType>()) {
    const auto e = l->getElementType()->kind();
    if (e == c10::TypeKind::FloatType && v.isIntList()) {
      std::vector<double> d;
      for (int64_t i : v.toIntVector()) d.push_back(static_cast<double>(i));
      return c10::IValue(d);
    }
    if (v.isList() && v.toListRef().empty()) {  // an empty list of the declared element type
      if (e == c10::TypeKind::IntType) return c10::IValue(std::vector<int64_t>{});
      if (e == c10::TypeKind::FloatType) return c10::IValue(std::vector<double>{});
      if (e == c10::TypeKind::BoolType) return c10::IValue(c10::List<bool>());
      if (e == c10::TypeKind::TensorType) return c10::IValue(std::vector<at::Tensor>{});
    }
  }
  // Devices: the program was exported on one device and runs on the model's.
  if (v.isDevice() && v.toDevice() != device) return c10::IValue(device);
  return v;
}

class ExportedModel final : public Model {
 public:
  ExportedModel(ExportedProgram p, at::Device device) : path_(std::move(p.path)), num_values_(p.num_values) {
    check(num_values_ >= 0 && p.output >= 0 && p.output < num_values_, ErrorKind::Argument, where(),
          "the output value is out of range");
    // State: parameters then buffers (the Model's order), constants held here.
    std::unordered_map<int64_t, std::string> graph_input;  // value -> what it is, for errors
    for (auto& s : p.state) {
      check_value(s.value, "state '" + s.name + "'");
      check(s.tensor.defined(), ErrorKind::Argument, where(), "state '", s.name, "' has no tensor");
      at::Tensor t = s.tensor.to(device);
      if (s.kind == ExportState::Kind::Parameter) {
        graph_input[s.value] = "parameter '" + s.name + "'";
        add_parameter(s.name, t);
        param_values_.push_back(s.value);
      } else if (s.kind == ExportState::Kind::Buffer) {
        graph_input[s.value] = "buffer '" + s.name + "'";
        buffer_values_.emplace_back(s.name, s.value, t);
      } else {
        graph_input[s.value] = "tensor constant '" + s.name + "'";
        constants_.emplace_back(s.value, t);
      }
    }
    for (auto& b : buffer_values_) add_buffer(std::get<0>(b), std::get<2>(b));
    if (!parameters().empty()) dtype_ = parameters().front().second.scalar_type();
    check(!p.inputs.empty(), ErrorKind::Unsupported, where(), "the program takes no tensor input");
    for (const auto& in : p.inputs) {
      check_value(in.value, "input '" + in.name + "'");
      check(in.symbols.size() == in.sizes.size() && in.min_size.size() == in.sizes.size() &&
                in.max_size.size() == in.sizes.size(),
            ErrorKind::Argument, where(), "input '", in.name, "': one symbol and range per dimension");
      graph_input[in.value] = "user input '" + in.name + "'";
    }
    inputs_ = std::move(p.inputs);
    if (!inputs_.empty()) dtype_ = inputs_.front().dtype;
    for (auto& c : p.constant_inputs) {
      check_value(c.first, "constant input");
      constant_inputs_.push_back(std::move(c));
    }
    device_ = device;

    // Nodes, checked against their schemas; values aliasing a graph input are tracked so that
    // no in-place op can write to one.
    std::unordered_map<int64_t, std::string> aliases = graph_input;
    std::vector<int64_t> last_use(num_values_, -1);
    std::vector<bool> defined(num_values_, false);
    for (const auto& kv : graph_input) defined[kv.first] = true;
    for (const auto& c : constant_inputs_) defined[c.first] = true;
    steps_.reserve(p.nodes.size());
    for (size_t ni = 0; ni < p.nodes.size(); ++ni) {
      ExportNode& n = p.nodes[ni];
      Step st;
      st.name = n.name;
      st.target = n.target;
      st.builtin = builtin_of(n.target);
      st.outputs = n.outputs;
      st.list_output = n.list_output;
      st.list_output.resize(st.outputs.size(), false);
      auto read = [&](int64_t v, const std::string& what) {
        if (v < 0) return;
        check_value(v, what);
        check(defined[v], ErrorKind::Argument, where(), "node '", n.name, "' reads ", what,
              " before any node writes it");
        last_use[v] = static_cast<int64_t>(ni);
      };
      auto read_slot = [&](const Slot& s, const std::string& arg) {
        for (int64_t r : s.refs) read(r, "a value (argument '" + arg + "')");
      };
      auto to_slot = [&](ExportArg& a) {
        Slot s;
        s.kind = a.kind;
        s.constant = std::move(a.constant);
        s.refs = std::move(a.refs);
        s.literals = std::move(a.literals);
        if (s.kind == ExportArg::Kind::IntList)
          check(s.literals.size() == s.refs.size(), ErrorKind::Argument, where(), "node '", n.name,
                "': argument '", a.name, "' has ", s.refs.size(), " entries and ", s.literals.size(), " literals");
        return s;
      };
      if (st.builtin != Builtin::None) {
        for (auto& a : n.args) {
          Slot s = to_slot(a);
          read_slot(s, a.name);
          st.slots.push_back(std::move(s));
        }
        const size_t want = (st.builtin == Builtin::Neg || st.builtin == Builtin::SymNumel ||
                             st.builtin == Builtin::SymStorageOffset) ? 1 : 2;
        check(st.slots.size() == want, ErrorKind::Argument, where(), "node '", n.name, "' (", n.target,
              ") takes ", want, " argument(s), got ", st.slots.size());
        check(st.outputs.size() == 1 && st.outputs[0].size() == 1, ErrorKind::Argument, where(), "node '",
              n.name, "' (", n.target, ") returns one value");
      } else {
        const auto dot = n.target.rfind('.');
        const auto sep = n.target.find("::");
        check(dot != std::string::npos && sep != std::string::npos && dot > sep, ErrorKind::Unsupported,
              where(), "node '", n.name, "' calls '", n.target, "', which is not an operator name");
        const std::string ns = n.target.substr(0, sep);
        check(ns == "aten" || ns == "prims", ErrorKind::Unsupported, where(), "node '", n.name, "' calls ",
              n.target, ": only aten and prims operators are run");
        const std::string op_name = n.target.substr(sep + 2, dot - sep - 2);
        // Operators that reach outside the program: files (from_file maps one; a shared mapping
        // writes to it) and the process's output.
        check(op_name != "from_file" && op_name != "save" && op_name != "_print",
              ErrorKind::Unsupported, where(), "node '", n.name, "' calls ", n.target,
              ", which a loaded program may not call (it reaches files or memory outside the program)");
        std::string overload = n.target.substr(dot + 1);
        if (overload == "default") overload.clear();
        auto h = c10::Dispatcher::singleton().findSchema({n.target.substr(0, dot), overload});
        check(h.has_value(), ErrorKind::Unsupported, where(), "node '", n.name, "' calls ", n.target,
              ", which this libtorch (", compat::torch_header_version(), ") does not have; export with a PyTorch whose "
              "operators it knows, or load the program with a newer libtorch");
        st.op = *h;
        const auto& schema = h->schema();
        std::unordered_map<std::string, ExportArg*> by_name;
        for (auto& a : n.args) {
          check(by_name.emplace(a.name, &a).second, ErrorKind::Argument, where(), "node '", n.name,
                "' gives argument '", a.name, "' twice");
        }
        size_t used = 0;
        bool writes = false;
        for (const auto& arg : schema.arguments()) {
          auto it = by_name.find(arg.name());
          Slot s;
          if (it != by_name.end()) {
            s = to_slot(*it->second);
            ++used;
            if (s.kind == ExportArg::Kind::Constant) s.constant = coerce(s.constant, arg.type(), device);
          } else {
            check(arg.default_value().has_value(), ErrorKind::Argument, where(), "node '", n.name, "' (",
                  n.target, ") lacks argument '", arg.name(), "', which has no default");
            s.constant = *arg.default_value();
          }
          read_slot(s, arg.name());
          if (arg.alias_info() && arg.alias_info()->isWrite()) {
            writes = true;
            for (int64_t r : s.refs) {
              auto al = r >= 0 ? aliases.find(r) : aliases.end();
              check(al == aliases.end(), ErrorKind::Unsupported, where(), "node '", n.name, "' (", n.target,
                    ") writes in place to ", al == aliases.end() ? "" : al->second,
                    "; a functional forward cannot change its inputs or the model's state. A BatchNorm "
                    "exported in training mode updates its running statistics: export model.eval()");
            }
          }
          st.slots.push_back(std::move(s));
        }
        if (used != n.args.size()) {
          for (const auto& a : n.args) {
            bool known = false;
            for (const auto& arg : schema.arguments()) known = known || arg.name() == a.name;
            check(known, ErrorKind::Argument, where(), "node '", n.name, "' gives argument '", a.name, "', which ",
                  n.target, " does not take (", schema, ")");
          }
        }
        check(st.outputs.size() == schema.returns().size(), ErrorKind::Argument, where(), "node '", n.name,
              "' binds ", st.outputs.size(), " output(s); ", n.target, " returns ", schema.returns().size());
        // Views of an input alias it; so does what an in-place op returns.
        for (size_t r = 0; r < schema.returns().size(); ++r) {
          const auto& ret = schema.returns()[r];
          // _unsafe_view shares its input's storage without saying so in its schema.
          if (!ret.alias_info() && !writes && op_name != "_unsafe_view") continue;
          std::string source;
          for (size_t ai = 0; ai < st.slots.size() && source.empty(); ++ai)
            for (int64_t ref : st.slots[ai].refs) {
              auto al = ref >= 0 ? aliases.find(ref) : aliases.end();
              if (al != aliases.end()) source = al->second;
            }
          if (!source.empty())
            for (int64_t o : st.outputs[r]) if (o >= 0) aliases[o] = source;
        }
      }
      for (const auto& outs : st.outputs)
        for (int64_t o : outs) {
          if (o < 0) continue;
          check_value(o, "output of node '" + n.name + "'");
          check(!defined[o], ErrorKind::Argument, where(), "node '", n.name, "' writes a value that is already defined");
          defined[o] = true;
        }
      steps_.push_back(std::move(st));
    }
    check(defined[p.output], ErrorKind::Argument, where(), "the output value is never written");
    output_ = p.output;
    for (int64_t v = 0; v < num_values_; ++v)
      if (last_use[v] >= 0 && v != output_) steps_[last_use[v]].release.push_back(v);
    // Values written and never read are dropped right away.
    for (size_t i = 0; i < steps_.size(); ++i)
      for (const auto& outs : steps_[i].outputs)
        for (int64_t o : outs)
          if (o >= 0 && last_use[o] < 0 && o != output_) steps_[i].release.push_back(o);
  }

  std::string kind() const override { return "exported"; }
  size_t num_inputs() const override { return inputs_.size(); }
  size_t num_required_inputs() const override { return inputs_.size(); }
  std::string input_names() const override {
    std::string s;
    for (size_t i = 0; i < inputs_.size(); ++i) s += (i ? ", " : "") + inputs_[i].name;
    return s;
  }

  void check_input(const at::Tensor& x) const override { check_inputs({x}, /*all=*/false); }

  at::Tensor forward(const std::vector<at::Tensor>& state, const at::Tensor& x) const override {
    return forward_inputs(state, {x});
  }

  at::Tensor forward_inputs(const std::vector<at::Tensor>& state,
                            const std::vector<at::Tensor>& inputs) const override {
    check_inputs(inputs, /*all=*/true);
    check(state.size() == param_values_.size() + buffer_values_.size(), ErrorKind::Argument, where(),
          "state has ", state.size(), " tensors, the program ", param_values_.size() + buffer_values_.size());
    std::vector<c10::IValue> v(static_cast<size_t>(num_values_));
    for (size_t i = 0; i < param_values_.size(); ++i) v[param_values_[i]] = state[i];
    for (size_t i = 0; i < buffer_values_.size(); ++i) v[std::get<1>(buffer_values_[i])] = state[param_values_.size() + i];
    for (const auto& c : constants_) v[c.first] = c.second;
    for (const auto& c : constant_inputs_) v[c.first] = c.second;
    for (size_t i = 0; i < inputs_.size(); ++i) v[inputs_[i].value] = inputs[i];

    torch::jit::Stack stack;
    for (const Step& st : steps_) {
      stack.clear();
      for (const Slot& s : st.slots) push(stack, s, v);
      try {
        if (st.builtin != Builtin::None)
          stack = {c10::IValue(run_builtin(st, stack))};
        else
          st.op->callBoxed(stack);
      } catch (const c10::Error& e) {
        explain_missing_derivative(st, e);
        fail(ErrorKind::Argument, where(), "node '", st.name, "' (", st.target, ") failed: ",
             e.what_without_backtrace());
      }
      check(stack.size() == st.outputs.size(), ErrorKind::Argument, where(), "node '", st.name, "' returned ",
            stack.size(), " values, expected ", st.outputs.size());
      for (size_t r = 0; r < st.outputs.size(); ++r) {
        const auto& outs = st.outputs[r];
        if (st.list_output[r]) {
          auto list = stack[r].toTensorVector();
          check(list.size() == outs.size(), ErrorKind::Argument, where(), "node '", st.name, "' returned ",
                list.size(), " tensors, the program binds ", outs.size());
          for (size_t k = 0; k < outs.size(); ++k)
            if (outs[k] >= 0) v[outs[k]] = std::move(list[k]);
        } else if (!outs.empty() && outs[0] >= 0) {
          v[outs[0]] = std::move(stack[r]);
        }
      }
      for (int64_t id : st.release) v[id] = c10::IValue();
    }
    check(v[output_].isTensor(), ErrorKind::Unsupported, where(), "the chosen output is not a tensor");
    return v[output_].toTensor();
  }

 private:
  std::string where() const { return "exported program '" + path_ + "': "; }

  void check_value(int64_t v, const std::string& what) const {
    check(v >= 0 && v < num_values_, ErrorKind::Argument, where(), what, " refers to value ", v,
          " of ", num_values_);
  }

  void check_inputs(const std::vector<at::Tensor>& inputs, bool all) const {
    if (all)
      check(inputs.size() == inputs_.size(), ErrorKind::Argument, where(), "forward takes ", inputs_.size(),
            " tensor input(s) (", input_names(), "), got ", inputs.size(),
            inputs.size() < inputs_.size() ? "; pass several inputs as an array" : "");
    std::unordered_map<std::string, std::pair<int64_t, std::string>> symbols;
    for (size_t i = 0; i < inputs.size() && i < inputs_.size(); ++i) {
      const auto& spec = inputs_[i];
      const at::Tensor& x = inputs[i];
      check(x.defined(), ErrorKind::Argument, where(), "input '", spec.name, "' is undefined");
      check(x.scalar_type() == spec.dtype, ErrorKind::DType, where(), "input '", spec.name, "' must be ",
            c10::toString(spec.dtype), ", got ", c10::toString(x.scalar_type()));
      check(x.device() == device_, ErrorKind::Device, where(), "input '", spec.name, "' is on ", x.device().str(),
            ", the model is on ", device_.str());
      bool ok = x.dim() == static_cast<int64_t>(spec.sizes.size());
      for (size_t d = 0; ok && d < spec.sizes.size(); ++d) {
        const int64_t got = x.size(static_cast<int64_t>(d));
        if (spec.sizes[d] >= 0) {
          ok = got == spec.sizes[d];
          continue;
        }
        const std::string& sym = spec.symbols[d];
        check((spec.min_size[d] < 0 || got >= spec.min_size[d]) && (spec.max_size[d] < 0 || got <= spec.max_size[d]),
              ErrorKind::Shape, where(), "input '", spec.name, "' dimension ", d, " (", sym, ") is ", got,
              ", outside the range the program was exported for [", spec.min_size[d], ", ",
              spec.max_size[d] < 0 ? std::string("inf") : std::to_string(spec.max_size[d]), "]");
        auto s = symbols.emplace(sym, std::make_pair(got, spec.name));
        check(s.second || s.first->second.first == got, ErrorKind::Shape, where(), "input '", spec.name,
              "' dimension ", d, " (", sym, ") is ", got, ", but input '", s.first->second.second,
              "' has ", s.first->second.first, " for the same dimension");
      }
      if (!ok) fail(ErrorKind::Shape, where(), "input '", spec.name, "' must have shape ", spec_str(spec),
                    ", got ", shape_str(x.sizes()));
    }
  }

  static std::string spec_str(const ExportInput& s) {
    std::string out = "[";
    for (size_t d = 0; d < s.sizes.size(); ++d)
      out += (d ? ", " : "") + (s.sizes[d] >= 0 ? std::to_string(s.sizes[d]) : s.symbols[d]);
    return out + "]";
  }

  static void push(torch::jit::Stack& stack, const Slot& s, const std::vector<c10::IValue>& v) {
    switch (s.kind) {
      case ExportArg::Kind::Constant:
        stack.push_back(s.constant);
        return;
      case ExportArg::Kind::Value:
        stack.push_back(s.refs.empty() || s.refs[0] < 0 ? c10::IValue() : v[s.refs[0]]);
        return;
      case ExportArg::Kind::TensorList: {
        std::vector<at::Tensor> l;
        l.reserve(s.refs.size());
        for (int64_t r : s.refs) l.push_back(v[r].toTensor());
        stack.emplace_back(std::move(l));
        return;
      }
      case ExportArg::Kind::OptTensorList: {
        c10::List<c10::optional<at::Tensor>> l;
        for (int64_t r : s.refs) l.push_back(r < 0 ? c10::optional<at::Tensor>() : c10::optional<at::Tensor>(v[r].toTensor()));
        stack.emplace_back(std::move(l));
        return;
      }
      case ExportArg::Kind::IntList: {
        std::vector<int64_t> l(s.refs.size());
        for (size_t k = 0; k < l.size(); ++k) l[k] = s.refs[k] < 0 ? s.literals[k] : v[s.refs[k]].toInt();
        stack.emplace_back(std::move(l));
        return;
      }
    }
  }

  int64_t run_builtin(const Step& st, const torch::jit::Stack& in) const {
    auto i = [&](size_t k) { return in[k].toInt(); };
    switch (st.builtin) {
      case Builtin::SymSize: return in[0].toTensor().size(i(1));
      case Builtin::SymNumel: return in[0].toTensor().numel();
      case Builtin::SymStride: return in[0].toTensor().stride(i(1));
      case Builtin::SymStorageOffset: return in[0].toTensor().storage_offset();
      case Builtin::Add: return i(0) + i(1);
      case Builtin::Sub: return i(0) - i(1);
      case Builtin::Mul: return i(0) * i(1);
      case Builtin::FloorDiv: return floor_div(i(0), i(1));
      case Builtin::Mod: return i(0) - floor_div(i(0), i(1)) * i(1);
      case Builtin::Neg: return -i(0);
      case Builtin::Eq: return i(0) == i(1);
      case Builtin::Ne: return i(0) != i(1);
      case Builtin::Lt: return i(0) < i(1);
      case Builtin::Le: return i(0) <= i(1);
      case Builtin::Gt: return i(0) > i(1);
      case Builtin::Ge: return i(0) >= i(1);
      case Builtin::None: break;
    }
    fail(ErrorKind::Unsupported, where(), "node '", st.name, "': unknown builtin ", st.target);
  }

  // An op without a forward-mode derivative, named, with the node that calls it.
  void explain_missing_derivative(const Step& st, const c10::Error& e) const {
    const std::string msg = e.what_without_backtrace();
    const std::string key = "Trying to use forward AD with ";
    const size_t at = msg.find(key);
    if (at == std::string::npos) return;
    const size_t start = at + key.size();
    const std::string op = msg.substr(start, msg.find(' ', start) - start);
    fail(ErrorKind::Unsupported, where(), "node '", st.name, "' (", st.target, ") reaches ", op,
         ", which has no forward-mode derivative in this libtorch, so JVPs, linearized forwards and "
         "linearized steps cannot run through it (plain forwards and gradients can)");
  }

  std::string path_;
  int64_t num_values_;
  at::Device device_ = at::kCPU;
  std::vector<int64_t> param_values_;
  std::vector<std::tuple<std::string, int64_t, at::Tensor>> buffer_values_;
  std::vector<std::pair<int64_t, at::Tensor>> constants_;
  std::vector<std::pair<int64_t, c10::IValue>> constant_inputs_;
  std::vector<ExportInput> inputs_;
  std::vector<Step> steps_;
  int64_t output_ = -1;
};

}  // namespace

ModelPtr load_exported(ExportedProgram program, at::Device device) {
  const std::string path = program.path;
  try {
    return std::make_shared<ExportedModel>(std::move(program), device);
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    fail(ErrorKind::Unsupported, "exported program '", path, "' cannot be loaded: ", e.what_without_backtrace());
  }
}

}  // namespace tangent
