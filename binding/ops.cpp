// Fused task-vector kernels, exposed as one AsyncWorker per call.
#include "addon_data.h"
#include "merge.h"
#include "merge_files.h"
#include "ops.h"

namespace tangent_js {
namespace {

// combine(bases: (Tensor|null)[], inputs: Tensor[][], coeffs: number[], compute, out,
//         naive?: boolean) -> Promise<Tensor[]>
Napi::Value Combine(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    auto bases_arr = info[0].As<Napi::Array>();
    auto inputs_arr = info[1].As<Napi::Array>();
    auto coeffs_arr = info[2].As<Napi::Array>();
    std::vector<at::Tensor> bases(bases_arr.Length());
    std::vector<std::vector<at::Tensor>> inputs(inputs_arr.Length());
    for (uint32_t i = 0; i < bases.size(); ++i) {
      auto b = bases_arr.Get(i);
      if (!b.IsNull() && !b.IsUndefined()) bases[i] = UnwrapTensor(env, b, "base " + std::to_string(i));
    }
    for (uint32_t i = 0; i < inputs.size(); ++i) {
      auto row = inputs_arr.Get(i).As<Napi::Array>();
      for (uint32_t k = 0; k < row.Length(); ++k)
        inputs[i].push_back(UnwrapTensor(env, row.Get(k), "input " + std::to_string(i) + "." + std::to_string(k)));
    }
    std::vector<double> coeffs(coeffs_arr.Length());
    for (uint32_t k = 0; k < coeffs.size(); ++k) coeffs[k] = coeffs_arr.Get(k).As<Napi::Number>().DoubleValue();
    const auto compute = ParseDType(info[3].As<Napi::String>());
    auto outs_arr = info[4].As<Napi::Array>();  // one output dtype per tensor
    std::vector<at::ScalarType> out_dtypes(outs_arr.Length());
    for (uint32_t i = 0; i < out_dtypes.size(); ++i) out_dtypes[i] = ParseDType(outs_arr.Get(i).As<Napi::String>());
    const bool naive = info[5].IsBoolean() && info[5].As<Napi::Boolean>();
    auto out = std::make_shared<std::vector<at::Tensor>>();
    return Task::Run(
        env, "tangent.combine",
        [bases, inputs, coeffs, compute, out_dtypes, naive, out] {
          if (!naive) {
            *out = tangent::combine_all(bases, inputs, coeffs, compute, out_dtypes);
            return;
          }
          for (size_t i = 0; i < bases.size(); ++i)
            out->push_back(tangent::combine_naive(bases[i], inputs[i], coeffs, compute, out_dtypes.at(i)));
        },
        [out](Napi::Env env) -> Napi::Value {
          auto arr = Napi::Array::New(env, out->size());
          for (uint32_t i = 0; i < out->size(); ++i) arr.Set(i, WrapTensor(env, (*out)[i]));
          return arr;
        });
  });
}

std::vector<double> Numbers(const Napi::Value& v) {
  auto arr = v.As<Napi::Array>();
  std::vector<double> out(arr.Length());
  for (uint32_t i = 0; i < out.size(); ++i) out[i] = arr.Get(i).As<Napi::Number>().DoubleValue();
  return out;
}

// A NativeMergeSpec (lib/binding.ts): lib/merge validated every field; absent ones keep MergeSpec's defaults.
tangent::MergeSpec ParseMergeSpec(const Napi::Object& o) {
  tangent::MergeSpec spec;
  spec.method = o.Get("method").As<Napi::String>().Utf8Value();
  tangent::merge_method(spec.method);
  auto list = [&](const char* key) { return o.Has(key) && o.Get(key).IsArray() ? Numbers(o.Get(key)) : std::vector<double>{}; };
  auto flag = [&](const char* key, bool dflt) { return o.Has(key) && o.Get(key).IsBoolean() ? o.Get(key).As<Napi::Boolean>().Value() : dflt; };
  spec.weights = list("weights");
  spec.density = list("density");
  spec.gamma = list("gamma");
  spec.epsilon = list("epsilon");
  spec.lambda = NumberOr(o, "lambda", spec.lambda);
  spec.seed = static_cast<uint64_t>(NumberOr(o, "seed", 0));
  spec.t = NumberOr(o, "t", spec.t);
  spec.weighted_election = !(o.Has("election") && o.Get("election").As<Napi::String>().Utf8Value() == "unweighted");
  spec.normalize = flag("normalize", spec.normalize);
  spec.rescale = flag("rescale", spec.rescale);
  spec.select_topk = NumberOr(o, "selectTopk", spec.select_topk);
  spec.scale = NumberOr(o, "scale", spec.scale);
  spec.max_iter = static_cast<int64_t>(NumberOr(o, "maxIter", static_cast<double>(spec.max_iter)));
  spec.tol = NumberOr(o, "tol", spec.tol);
  spec.eps = NumberOr(o, "eps", spec.eps);
  spec.normalize_weights = flag("normalizeWeights", spec.normalize_weights);
  spec.flatten = flag("flatten", spec.flatten);
  spec.row_wise = flag("rowWise", spec.row_wise);
  spec.ram_epsilon = NumberOr(o, "ramEpsilon", spec.ram_epsilon);
  spec.ram_r = NumberOr(o, "r", spec.ram_r);
  spec.ram_alpha = NumberOr(o, "alpha", spec.ram_alpha);
  spec.compute = ParseDType(o.Get("compute").As<Napi::String>());
  spec.out = ParseDType(o.Get("out").As<Napi::String>());
  return spec;
}


tangent::OpenFile FileArg(const Napi::Value& v) {
  auto o = v.As<Napi::Object>();
  return {o.Get("fd").As<Napi::Number>().Int32Value(), o.Get("path").As<Napi::String>().Utf8Value()};
}

// mergeFiles(files: {fd, path}[], out: {fd, path}, items: NativeFileMergeItem[], specs: NativeMergeSpec[],
//            checkFinite: boolean, device?: string) -> Promise<string[]> (the non-finite tensors' names).
// The files stay open and owned by the caller (lib/merge.ts validated their headers).
Napi::Value MergeFiles(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    auto farr = info[0].As<Napi::Array>();
    std::vector<tangent::OpenFile> files;
    for (uint32_t i = 0; i < farr.Length(); ++i) files.push_back(FileArg(farr.Get(i)));
    const tangent::OpenFile out = FileArg(info[1]);
    auto iarr = info[2].As<Napi::Array>();
    std::vector<tangent::FileMergeItem> items(iarr.Length());
    for (uint32_t i = 0; i < items.size(); ++i) {
      auto o = iarr.Get(i).As<Napi::Object>();
      auto& it = items[i];
      it.name = o.Get("name").As<Napi::String>().Utf8Value();
      it.dtype = ParseDType(o.Get("dtype").As<Napi::String>());
      if (o.Has("dtypes") && o.Get("dtypes").IsArray()) {
        auto ds = o.Get("dtypes").As<Napi::Array>();
        for (uint32_t k = 0; k < ds.Length(); ++k) it.input_dtypes.push_back(ParseDType(ds.Get(k).As<Napi::String>()));
      }
      it.out = ParseDType(o.Get("out").As<Napi::String>());
      for (double d : Numbers(o.Get("shape"))) it.shape.push_back(static_cast<int64_t>(d));
      auto ins = o.Get("inputs").As<Napi::Array>();
      for (uint32_t k = 0; k < ins.Length(); ++k) {
        auto pair = ins.Get(k).As<Napi::Array>();
        it.inputs.push_back({pair.Get(0u).As<Napi::Number>().Int32Value(),
                             static_cast<uint64_t>(pair.Get(1u).As<Napi::Number>().DoubleValue())});
      }
      it.out_offset = static_cast<uint64_t>(o.Get("outOffset").As<Napi::Number>().DoubleValue());
      it.spec = o.Has("spec") ? static_cast<size_t>(o.Get("spec").As<Napi::Number>().Uint32Value()) : 0;
      it.base = !o.Has("base") || o.Get("base").ToBoolean();
    }
    auto sarr = info[3].As<Napi::Array>();
    std::vector<tangent::MergeSpec> specs;
    for (uint32_t i = 0; i < sarr.Length(); ++i) specs.push_back(ParseMergeSpec(sarr.Get(i).As<Napi::Object>()));
    const bool check_finite = info[4].ToBoolean();
    const at::Device device = info.Length() > 5 && info[5].IsString() ? ParseDevice(info[5].As<Napi::String>()) : at::Device(at::kCPU);
    auto bad = std::make_shared<std::vector<std::string>>();
    return Task::Run(
        env, "tangent.mergeFiles",
        [files, out, items, specs, check_finite, device, bad] {
          *bad = tangent::merge_file_tensors(files, out, items, specs, check_finite, device);
        },
        [bad](Napi::Env env) -> Napi::Value {
          auto arr = Napi::Array::New(env, bad->size());
          for (uint32_t i = 0; i < bad->size(); ++i) arr.Set(i, Napi::String::New(env, (*bad)[i]));
          return arr;
        });
  });
}

// mergeTensor(name, base: Tensor | null, models: Tensor[], spec) -> Promise<Tensor>
Napi::Value MergeTensor(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const std::string name = info[0].As<Napi::String>();
    at::Tensor base = info[1].IsNull() || info[1].IsUndefined() ? at::Tensor() : UnwrapTensor(env, info[1], "base '" + name + "'");
    auto models = TensorList(env, info[2], "model");
    const tangent::MergeSpec spec = ParseMergeSpec(info[3].As<Napi::Object>());
    return TensorTask(env, "tangent.merge", [name, base, models, spec] { return tangent::merge_tensor(name, base, models, spec); });
  });
}

// mergeMethods() -> { name, base: 'required' | 'none' | 'optional', minModels, maxModels }[]: the
// native registry (lib/merge/methods.ts keeps its parameter table beside it; a test compares them).
Napi::Value MergeMethods(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    const auto methods = tangent::merge_methods();
    auto arr = Napi::Array::New(env, methods.size());
    for (uint32_t i = 0; i < methods.size(); ++i) {
      auto o = Napi::Object::New(env);
      o.Set("name", methods[i].name);
      o.Set("base", methods[i].base == tangent::BaseUse::Required ? "required" : methods[i].base == tangent::BaseUse::None ? "none" : "optional");
      o.Set("minModels", static_cast<double>(methods[i].min_models));
      o.Set("maxModels", static_cast<double>(methods[i].max_models));
      arr.Set(i, o);
    }
    return arr;
  });
}

// dot(a: Tensor[], b: Tensor[]) -> Promise<number>
Napi::Value Dot(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    auto a = TensorList(env, info[0], "tensor");
    auto b = TensorList(env, info[1], "tensor");
    return NumberTask(env, "tangent.dot", [a, b] { return tangent::dot_all(a, b); });
  });
}

// copyInto(dst: Tensor[], src: Tensor[]) -> Promise<void>: dst[i].copy_(src[i]) in one worker.
Napi::Value CopyInto(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  return Guard(env, [&]() -> Napi::Value {
    auto dst = TensorList(env, info[0], "dst");
    auto src = TensorList(env, info[1], "src");
    tangent::check(dst.size() == src.size(), tangent::ErrorKind::Argument, "copyInto: ", dst.size(),
                   " destinations for ", src.size(), " sources");
    return Task::Run(env, "tangent.copy",
                     [dst, src]() mutable {
                       for (size_t i = 0; i < dst.size(); ++i) tangent::copy_into(dst[i], src[i]);
                     },
                     [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  });
}

}  // namespace

Napi::Object InitOps(Napi::Env env, Napi::Object exports) {
  exports.Set("combine", Napi::Function::New(env, Combine));
  exports.Set("mergeTensor", Napi::Function::New(env, MergeTensor));
  exports.Set("mergeFiles", Napi::Function::New(env, MergeFiles));
  exports.Set("mergeMethods", Napi::Function::New(env, MergeMethods));
  exports.Set("dot", Napi::Function::New(env, Dot));
  exports.Set("copyInto", Napi::Function::New(env, CopyInto));
  return exports;
}

}  // namespace tangent_js
