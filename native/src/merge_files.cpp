#include "../merge_files.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <type_traits>

#include <unistd.h>

namespace tangent {
namespace {

constexpr int64_t kFileChunk = 65536;  // elements per read: 256 KiB of float32 per input
constexpr int64_t kTile = 16384;       // elements per accumulator tile, as ops.h's combine

std::string where(const OpenFile& f, const std::string& tensor) {
  return f.path + ": tensor '" + tensor + "'";
}

void pread_fully(const OpenFile& f, void* dst, size_t n, uint64_t off, const std::string& tensor) {
  auto* p = static_cast<char*>(dst);
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(f.fd, p + done, n - done, static_cast<off_t>(off + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail(ErrorKind::IO, where(f, tensor), ": read failed at byte ", off + done, ": ", std::strerror(errno));
    if (r == 0)
      fail(ErrorKind::IO, where(f, tensor), ": unexpected end of file at byte ", off + done,
           " (the file was truncated or replaced while it was being merged)");
    done += static_cast<size_t>(r);
  }
}

void pwrite_fully(const OpenFile& f, const void* src, size_t n, uint64_t off, const std::string& tensor) {
  const auto* p = static_cast<const char*>(src);
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pwrite(f.fd, p + done, n - done, static_cast<off_t>(off + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) fail(ErrorKind::IO, where(f, tensor), ": write failed at byte ", off + done, ": ", r < 0 ? std::strerror(errno) : "no progress");
    done += static_cast<size_t>(r);
  }
}

// NaN or ±Inf among v[0..n): x − x is 0 for a finite x and NaN otherwise (vectorizes; no branch).
template <typename T>
bool any_non_finite(const T* v, int64_t n) {
  int bad = 0;
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    for (int64_t j = 0; j < n; ++j) {
      const T d = v[j] - v[j];
      bad |= (d != d);
    }
  } else {
    for (int64_t j = 0; j < n; ++j) {
      const float x = static_cast<float>(v[j]);
      const float d = x - x;
      bad |= (d != d);
    }
  }
  return bad != 0;
}

// out[j] = Σ_k c[k]·in[k][j], in tiles, with the arithmetic of ops.h's combine (no base term):
// the same result bit for bit.
template <typename In, typename Acc, typename Out>
void combine_span(const std::vector<const In*>& in, const std::vector<Acc>& c, Out* out, int64_t n) {
  Acc acc[kTile];
  for (int64_t s = 0; s < n; s += kTile) {
    const int64_t len = std::min(kTile, n - s);
    std::fill(acc, acc + len, Acc(0));
    for (size_t k = 0; k < in.size(); ++k) {
      const In* x = in[k] + s;
      const Acc ck = c[k];
      for (int64_t j = 0; j < len; ++j) acc[j] += ck * static_cast<Acc>(x[j]);
    }
    Out* o = out + s;
    for (int64_t j = 0; j < len; ++j) o[j] = static_cast<Out>(acc[j]);
  }
}

// Task arithmetic, chunk by chunk: read K+1 chunks, combine, check, write. Chunks run on
// libtorch's intra-op threads, each with its own buffers. Returns whether any output is non-finite.
template <typename In, typename Acc, typename Out>
bool task_arithmetic_file(const std::vector<OpenFile>& files, const OpenFile& out, const FileMergeItem& it,
                          const std::vector<double>& coeffs, int64_t n, bool check_finite) {
  const size_t K1 = it.inputs.size();
  const std::vector<Acc> c(coeffs.begin(), coeffs.end());
  const int64_t chunks = (n + kFileChunk - 1) / kFileChunk;
  std::atomic<bool> bad{false};
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    // Per-thread buffers, kept between calls (aligned for any dtype: vectors of double).
    thread_local std::vector<double> inbuf, outbuf;
    const size_t in_elems = (kFileChunk * sizeof(In) + sizeof(double) - 1) / sizeof(double);
    const size_t out_elems = (kFileChunk * sizeof(Out) + sizeof(double) - 1) / sizeof(double);
    if (inbuf.size() < K1 * in_elems) inbuf.resize(K1 * in_elems);
    if (outbuf.size() < out_elems) outbuf.resize(out_elems);
    std::vector<const In*> ptrs(K1);
    for (int64_t ch = begin; ch < end; ++ch) {
      const int64_t s = ch * kFileChunk;
      const int64_t len = std::min(kFileChunk, n - s);
      for (size_t k = 0; k < K1; ++k) {
        auto* dst = reinterpret_cast<In*>(inbuf.data() + k * in_elems);
        const FileSpan& sp = it.inputs[k];
        pread_fully(files[sp.file], dst, static_cast<size_t>(len) * sizeof(In), sp.offset + static_cast<uint64_t>(s) * sizeof(In), it.name);
        ptrs[k] = dst;
      }
      auto* o = reinterpret_cast<Out*>(outbuf.data());
      combine_span<In, Acc, Out>(ptrs, c, o, len);
      if (check_finite && any_non_finite(o, len)) bad = true;
      pwrite_fully(out, o, static_cast<size_t>(len) * sizeof(Out), it.out_offset + static_cast<uint64_t>(s) * sizeof(Out), it.name);
    }
  });
  return bad;
}

// Any method, whole tensors: read every input, merge_tensor, check, write.
bool generic_file(const std::vector<OpenFile>& files, const OpenFile& out, const FileMergeItem& it,
                  const std::vector<double>& weights, MergeSpec spec, bool check_finite) {
  std::vector<at::Tensor> in;
  for (const FileSpan& sp : it.inputs) {
    at::Tensor t = at::empty(it.shape, at::TensorOptions().dtype(it.dtype));
    pread_fully(files[sp.file], t.data_ptr(), t.nbytes(), sp.offset, it.name);
    in.push_back(t);
  }
  spec.out = it.out;
  const std::vector<at::Tensor> ft(in.begin() + 1, in.end());
  at::Tensor m = merge_tensor(it.name, in[0], ft, weights, spec).contiguous();
  check(m.scalar_type() == it.out && static_cast<uint64_t>(m.numel()) == static_cast<uint64_t>(in[0].numel()),
        ErrorKind::State, "merge: tensor '", it.name, "': the merge produced ", c10::toString(m.scalar_type()),
        shape_str(m.sizes()), ", expected ", c10::toString(it.out), shape_str(it.shape));
  bool bad = false;
  if (check_finite && at::isFloatingType(m.scalar_type())) bad = !at::isfinite(m).all().item<bool>();
  pwrite_fully(out, m.data_ptr(), m.nbytes(), it.out_offset, it.name);
  return bad;
}

}  // namespace

std::vector<std::string> merge_file_tensors(const std::vector<OpenFile>& files, const OpenFile& out,
                                            const std::vector<FileMergeItem>& items,
                                            const std::vector<double>& weights, const MergeSpec& spec,
                                            bool check_finite) {
  check(spec.compute == at::kFloat || spec.compute == at::kDouble, ErrorKind::DType,
        "merge: compute dtype must be float32 or float64, got ", c10::toString(spec.compute));
  std::vector<std::string> non_finite;
  for (const FileMergeItem& it : items) {
    check(it.inputs.size() == weights.size() + 1, ErrorKind::Argument, "merge: tensor '", it.name, "' has ",
          it.inputs.size(), " inputs for ", weights.size(), " models (expected the base + one per model)");
    for (const FileSpan& sp : it.inputs)
      check(sp.file >= 0 && static_cast<size_t>(sp.file) < files.size(), ErrorKind::Argument, "merge: tensor '",
            it.name, "' names input file ", sp.file, " of ", files.size());
    int64_t n = 1;
    for (int64_t d : it.shape) {
      check(d >= 0 && (d == 0 || n <= INT64_MAX / d), ErrorKind::Shape, "merge: tensor '", it.name, "' has shape ",
            shape_str(it.shape));
      n *= d;
    }
    if (n == 0) continue;
    const bool is_float = at::isFloatingType(it.dtype);
    check(!is_float || at::isFloatingType(it.out), ErrorKind::DType, "merge: tensor '", it.name,
          "': output dtype ", c10::toString(it.out), " for a floating-point input");
    check(is_float || it.out == it.dtype, ErrorKind::DType, "merge: tensor '", it.name, "': integer tensor (",
          c10::toString(it.dtype), ") cannot be written as ", c10::toString(it.out));
    bool bad = false;
    if (is_float && spec.method == MergeMethod::TaskArithmetic) {
      // θ0 + λ Σ w_k (θ_k − θ0) = (1 − λ Σ w_k) θ0 + Σ λ w_k θ_k, as merge_tensor computes it.
      double wsum = 0;
      std::vector<double> c{0.0};
      for (double w : weights) {
        wsum += w;
        c.push_back(spec.lambda * w);
      }
      c[0] = 1.0 - spec.lambda * wsum;
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, it.dtype, "merge_files_in", [&] {
        using In = scalar_t;
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, it.out, "merge_files_out", [&] {
          using Out = scalar_t;
          bad = spec.compute == at::kDouble ? task_arithmetic_file<In, double, Out>(files, out, it, c, n, check_finite)
                                            : task_arithmetic_file<In, float, Out>(files, out, it, c, n, check_finite);
        });
      });
    } else {
      bad = generic_file(files, out, it, weights, spec, check_finite);
    }
    if (bad) non_finite.push_back(it.name);
  }
  return non_finite;
}

}  // namespace tangent
