// The merge methods, by name (one file each in this folder, like mergekit's merge_methods/), and
// merge_tensor: the checks every method shares, then the method.
#include "method.h"
#include "stream.h"

namespace tangent {
namespace merge {

Method task_arithmetic_method();
std::vector<Method> generalized_task_arithmetic_methods();
Method linear_method();
Method passthrough_method();
Method slerp_method();
Method nuslerp_method();
Method multislerp_method();
Method karcher_method();
Method nearswap_method();
Method model_stock_method();
Method sce_method();
Method ram_method();
Method ramplus_tl_method();

const std::vector<Method>& registry() {
  static const std::vector<Method> methods = [] {
    std::vector<Method> m{task_arithmetic_method()};
    for (const Method& g : generalized_task_arithmetic_methods()) m.push_back(g);
    for (Method (*f)() : {linear_method, passthrough_method, slerp_method, nuslerp_method, multislerp_method,
                          karcher_method, nearswap_method, model_stock_method, sce_method, ram_method, ramplus_tl_method})
      m.push_back(f());
    return m;
  }();
  return methods;
}

const Method& find(const std::string& name) {
  for (const Method& m : registry())
    if (name == m.info.name) return m;
  std::string known;
  for (const Method& m : registry()) known += (known.empty() ? "" : ", ") + std::string(m.info.name);
  fail(ErrorKind::Argument, "unknown merge method '", name, "' (expected one of ", known, ")");
}

}  // namespace merge

std::vector<MergeMethodInfo> merge_methods() {
  std::vector<MergeMethodInfo> out;
  for (const auto& m : merge::registry()) out.push_back(m.info);
  return out;
}

const MergeMethodInfo& merge_method(const std::string& name) { return merge::find(name).info; }

at::Tensor merge_tensor(const std::string& name, const at::Tensor& base, const std::vector<at::Tensor>& models,
                        const MergeSpec& s) {
  const merge::Method& m = merge::find(s.method);
  const MergeMethodInfo& info = m.info;
  const bool has_base = base.defined();
  check(!(info.base == BaseUse::Required && !has_base), ErrorKind::Argument, "merge: ", info.name, " needs a base model");
  check(!(info.base == BaseUse::None && has_base), ErrorKind::Argument, "merge: ", info.name,
        " takes no base model (every input is a model)");
  check(models.size() >= info.min_models && (info.max_models == 0 || models.size() <= info.max_models),
        ErrorKind::Argument, "merge: ", info.name, " takes ",
        info.max_models == info.min_models ? "exactly " : "at least ", info.min_models, info.max_models > info.min_models ? " to " + std::to_string(info.max_models) : std::string(),
        " model", info.min_models == 1 && info.max_models == 1 ? "" : "s", has_base ? " beside the base" : "", ", got ", models.size());
  for (const auto* v : {&s.weights, &s.density, &s.gamma, &s.epsilon})
    check(v->empty() || v->size() == models.size(), ErrorKind::Argument, "merge: ", models.size(), " models but ",
          v->size(), " per-model values");
  const at::Tensor& ref = has_base ? base : models[0];
  for (size_t k = 0; k < models.size(); ++k) {
    check(models[k].sizes() == ref.sizes(), ErrorKind::Shape, "merge: tensor '", name, "' of model ", k, " has shape ",
          shape_str(models[k].sizes()), has_base ? ", the base has " : ", model 0 has ", shape_str(ref.sizes()));
    check(models[k].scalar_type() == ref.scalar_type(), ErrorKind::DType, "merge: tensor '", name, "' of model ", k,
          " is ", c10::toString(models[k].scalar_type()), has_base ? ", the base is " : ", model 0 is ",
          c10::toString(ref.scalar_type()));
    check(models[k].device() == ref.device(), ErrorKind::Device, "merge: tensor '", name, "' of model ", k, " is on ",
          models[k].device().str(), ", not ", ref.device().str());
  }
  if (!at::isFloatingType(ref.scalar_type())) return ref.clone();
  compat::NoGradGuard no_grad;
  // An empty tensor merges to an empty tensor, whatever the method (as the file merge skips it).
  if (ref.numel() == 0) return at::empty(ref.sizes(), ref.options().dtype(s.out));
  if (ref.is_cpu() && m.streams(s, ref.dim())) {
    // The passes of the file merge (merge/stream.h), over the tensors' memory: the same bits.
    std::vector<at::Tensor> in;
    if (has_base) in.push_back(base);
    in.insert(in.end(), models.begin(), models.end());
    at::Tensor out = at::empty(ref.sizes(), ref.options().dtype(s.out));
    if (out.numel() == 0) return out;
    merge::TensorSource src(in);
    merge::TensorSink sink(out);
    merge::stream_merge(name, s, has_base, ref.sizes().vec(), src, sink);
    return out;
  }
  if (m.raw_inputs) return m.run({name, base, models, s});
  const at::Tensor b = has_base ? base.to(s.compute) : at::Tensor();
  std::vector<at::Tensor> xs;
  for (const auto& x : models) xs.push_back(x.to(s.compute));
  at::Tensor out = m.run({name, b, xs, s});
  return out.to(s.out);
}

}  // namespace tangent
