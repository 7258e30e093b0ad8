// Streaming merges: one tensor's inputs seen chunk by chunk, so a merge holds a few chunk buffers
// per thread instead of whole tensors — file to file (merge_files.cpp: mapped or read inputs,
// positioned writes) and in memory on the CPU (merge_tensor: the same passes over the tensors, so
// both give the same bits). Chunks are fixed (kChunk elements), run on libtorch's intra-op threads,
// and every reduction sums per-chunk partials in chunk order: results do not depend on threads.
//   combination methods (method.h's Coefficients): a Gram pass, then the fused combine;
//   the task-vector family: exact magnitude bounds by radix selection where it trims by rank (two
//   passes per 32 key bits, all models at once; one more where a boundary is tied), counter-based
//   masks (DARE; DELLA over chunks of whole rows), then the election and mean entry by entry;
//   sce, ram, ramplus_tl, nearswap: their counting passes, then entry by entry; nuslerp by rows:
//   chunks of whole rows, one pass (by columns it is merged whole).
#pragma once

#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <type_traits>

#include "method.h"

namespace tangent {
namespace merge {

constexpr int64_t kChunk = 65536;  // elements per chunk: 256 KiB of float32 per input

// fn(chunk, start, len, xs): xs[i] points at elements [start, start + len) of input i (the base
// first where given), converted to the compute dtype (float or double as asked).
using ChunkFn = std::function<void(int64_t chunk, int64_t start, int64_t len, const void* const* xs)>;

class ChunkSource {
 public:
  virtual ~ChunkSource() = default;
  virtual int64_t numel() const = 0;
  virtual size_t inputs() const = 0;
  // Calls fn for every chunk of `chunk` elements (the last one shorter), in parallel; fn may throw
  // (the first error is rethrown).
  virtual void chunks(at::ScalarType compute, const ChunkFn& fn, int64_t chunk = kChunk) const = 0;
};

class ChunkSink {
 public:
  virtual ~ChunkSink() = default;
  virtual at::ScalarType dtype() const = 0;
  // Elements [start, start + len) of the output, in dtype(); called from the chunk threads.
  virtual void write(int64_t start, int64_t len, const void* data) const = 0;
};

// Whether the tensor's merge streams (spec.method's Method::streams).
bool streams(const MergeSpec& spec, int64_t dim);
// Streams one tensor's merge from `src` into `sink`. Returns whether any output is NaN or ±Inf.
bool stream_merge(const std::string& name, const MergeSpec& spec, bool has_base, const std::vector<int64_t>& shape,
                  const ChunkSource& src, const ChunkSink& sink);

// A combination method's two passes (the Gram, the fused combine with its coefficients).
bool stream_combination(const Args& args, const ChunkSource& src, const ChunkSink& sink);
// The fused combine alone, Σ_i c_i x_i in the compute dtype.
bool stream_combine_coefficients(const ChunkSource& src, const std::vector<double>& c, at::ScalarType compute,
                                 const ChunkSink& sink);

// The inputs as contiguous CPU tensors of one dtype (merge_tensor's source).
class TensorSource : public ChunkSource {
 public:
  explicit TensorSource(std::vector<at::Tensor> inputs);
  int64_t numel() const override { return n_; }
  size_t inputs() const override { return xs_.size(); }
  void chunks(at::ScalarType compute, const ChunkFn& fn, int64_t chunk = kChunk) const override;

 private:
  std::vector<at::Tensor> xs_;
  int64_t n_ = 0;
};

// A contiguous CPU tensor as the output (merge_tensor's sink).
class TensorSink : public ChunkSink {
 public:
  explicit TensorSink(at::Tensor& out) : out_(out) {}
  at::ScalarType dtype() const override { return out_.scalar_type(); }
  void write(int64_t start, int64_t len, const void* data) const override {
    std::memcpy(static_cast<char*>(out_.data_ptr()) + static_cast<size_t>(start) * out_.element_size(), data,
                static_cast<size_t>(len) * out_.element_size());
  }

 private:
  at::Tensor& out_;
};

// The plain function converting len values of dtype `in` at src to Acc (float or double) at dst
// (no dispatch frames: safe to leave by siglongjmp).
using ConvertFn = void (*)(const void* src, void* dst, int64_t len);
ConvertFn converter(at::ScalarType in, at::ScalarType acc);
// Converts len values of Acc at src to `out` at dst; returns whether any result is NaN or ±Inf.
bool convert_out(at::ScalarType acc, const void* src, at::ScalarType out, void* dst, int64_t len);

// The last pass of every streamed method: body(chunk, start, len, xs, res) fills res[0, len) with
// the output in Acc (xs: the inputs in Acc); each chunk is then converted to the sink's dtype and
// written. Returns whether any output is NaN or ±Inf. Per-thread buffers are reused, except after
// a chunk over 4·kChunk (a long DELLA or nuslerp row).
template <typename Acc, typename Body>
bool stream_out(const ChunkSource& src, at::ScalarType compute, const ChunkSink& sink, const Body& body,
                int64_t chunk = kChunk) {
  std::atomic<bool> bad{false};
  const at::ScalarType out = sink.dtype();
  src.chunks(compute, [&](int64_t ch, int64_t start, int64_t len, const void* const* xs) {
    thread_local std::vector<Acc> res;
    thread_local std::vector<double> obuf;  // aligned for any output dtype
    if (res.size() < static_cast<size_t>(len)) res.resize(static_cast<size_t>(len)), obuf.resize(static_cast<size_t>(len));
    body(ch, start, len, reinterpret_cast<const Acc* const*>(xs), res.data());
    if (convert_out(compute, res.data(), out, obuf.data(), len)) bad = true;
    sink.write(start, len, obuf.data());
    if (len > 4 * kChunk) std::vector<Acc>().swap(res), std::vector<double>().swap(obuf);
  }, chunk);
  return bad;
}

// The pieces stream methods use: the Gram of the inputs (method.h) in one pass, and the exact
// rank boundaries of |τ_k|.
Gram stream_gram(const ChunkSource& src, bool has_base, at::ScalarType compute);
// "rank(i) < b": entry i is among the b largest keys (ties by lower index first), found without
// sorting: the key T at rank b − 1 (radix selection, 16 bits per pass), and for a tied T the count
// of T-valued entries before each chunk.
struct RankBound {
  int64_t b = 0;          // 0: no entry; n: every entry
  int64_t n = 0;
  uint64_t key = 0;       // T
  int64_t ties = 0;       // entries equal to T that are kept (the first ones by index)
  std::vector<int64_t> before;  // per chunk: T-valued entries in earlier chunks (only when T is tied)
  bool all() const { return b >= n; }
  bool none() const { return b <= 0; }
};
// keys(set, xs, len, out): the chunk's keys of key set `set` (unsigned, ordered as the values they
// stand for, `key_bits` wide).
using KeyFn = std::function<void(size_t set, const void* const* xs, int64_t len, uint64_t* out)>;
struct RankRequest {
  size_t set;  // which key set
  int64_t b;   // the bound
};
// Every request's bound in the same passes over the source (2 or 4 radix passes, one more where a
// boundary is tied).
std::vector<RankBound> rank_bounds(const ChunkSource& src, at::ScalarType compute, int key_bits, const KeyFn& keys,
                                   const std::vector<RankRequest>& reqs);
// The bounds over |τ_k| = |input k + 1 − input 0| in the compute dtype (key set k: model k).
std::vector<RankBound> abs_rank_bounds(const ChunkSource& src, at::ScalarType compute, const std::vector<RankRequest>& reqs);

// |τ| (τ = xk − x0 in Acc) as the unsigned integer of its bits: ordered like |τ|.
template <typename Acc>
inline auto abs_key(Acc xk, Acc x0) {
  using U = std::conditional_t<std::is_same_v<Acc, double>, uint64_t, uint32_t>;
  const Acc a = std::abs(xk - x0);
  U u;
  std::memcpy(&u, &a, sizeof u);
  return u;
}

// Whether an entry with |τ| bits `key` is within the bound; `tied` counts the T-valued entries seen
// so far in index order (start a chunk at bound.before[chunk]).
inline bool within(const RankBound& rb, uint64_t key, int64_t& tied) {
  if (rb.none()) return false;  // loop-invariant branches: predicted
  if (rb.all()) return true;
  bool in = key > rb.key;       // data-dependent: no branch but at a tie (rare)
  if (key == rb.key) in = rb.before.empty() || tied++ < rb.ties;
  return in;
}

}  // namespace merge
}  // namespace tangent
