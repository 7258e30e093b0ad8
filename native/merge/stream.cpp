// Streaming merges (stream.h): chunked sources, the Gram pass, exact rank bounds by radix
// selection, and the combination methods' two passes.
#include "stream.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <type_traits>

namespace tangent {
namespace merge {

namespace {

template <typename Acc>
constexpr at::ScalarType acc_type() {
  return std::is_same_v<Acc, double> ? at::kDouble : at::kFloat;
}

int64_t chunk_count(int64_t n) { return (n + kChunk - 1) / kChunk; }

}  // namespace

namespace {
template <typename In, typename Acc>
void convert_plain(const void* src, void* dst, int64_t len) {
  const auto* s = static_cast<const In*>(src);
  auto* d = static_cast<Acc*>(dst);
  for (int64_t j = 0; j < len; ++j) d[j] = static_cast<Acc>(s[j]);
}
}  // namespace

ConvertFn converter(at::ScalarType in, at::ScalarType acc) {
  ConvertFn f = nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in, "merge_convert_in", [&] {
    f = acc == at::kDouble ? &convert_plain<scalar_t, double> : &convert_plain<scalar_t, float>;
  });
  return f;
}

void convert_chunk(at::ScalarType in, const void* src, at::ScalarType acc, void* dst, int64_t len) {
  converter(in, acc)(src, dst, len);
}

bool convert_out(at::ScalarType acc, const void* src, at::ScalarType out, void* dst, int64_t len) {
  int bad = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out, "merge_convert_out", [&] {
    auto* d = static_cast<scalar_t*>(dst);
    auto run = [&](const auto* s) {
      for (int64_t j = 0; j < len; ++j) {
        d[j] = static_cast<scalar_t>(s[j]);
        const float x = static_cast<float>(d[j]);
        const float z = x - x;  // 0 when finite, NaN otherwise
        bad |= (z != z);
      }
    };
    if (acc == at::kDouble) run(static_cast<const double*>(src));
    else run(static_cast<const float*>(src));
  });
  return bad != 0;
}

// ---- TensorSource ----

TensorSource::TensorSource(std::vector<at::Tensor> inputs) {
  for (auto& t : inputs) xs_.push_back(t.contiguous());
  n_ = xs_.empty() ? 0 : xs_[0].numel();
}

void TensorSource::chunks(at::ScalarType compute, const ChunkFn& fn) const {
  const size_t m = xs_.size();
  const at::ScalarType in = xs_[0].scalar_type();
  const size_t esz = c10::elementSize(compute);
  const bool direct = in == compute;
  at::parallel_for(0, chunk_count(n_), 1, [&](int64_t begin, int64_t end) {
    std::vector<char> buf(direct ? 0 : m * static_cast<size_t>(kChunk) * esz);
    std::vector<const void*> ptrs(m);
    for (int64_t ch = begin; ch < end; ++ch) {
      const int64_t s = ch * kChunk, len = std::min(kChunk, n_ - s);
      for (size_t i = 0; i < m; ++i) {
        const char* p = static_cast<const char*>(xs_[i].data_ptr()) + static_cast<size_t>(s) * xs_[i].element_size();
        if (direct) {
          ptrs[i] = p;
        } else {
          char* d = buf.data() + i * static_cast<size_t>(kChunk) * esz;
          convert_chunk(in, p, compute, d, len);
          ptrs[i] = d;
        }
      }
      fn(ch, s, len, ptrs.data());
    }
  });
}

// ---- Gram ----

double Gram::raw(size_t i, size_t j) const {
  if (!has_base) return v(i, j);
  if (i == 0 && j == 0) return v(0, 0);
  if (i == 0) return v(0, 0) + v(0, j);
  if (j == 0) return v(0, 0) + v(i, 0);
  return v(0, 0) + v(0, i) + v(0, j) + v(i, j);
}

Gram stream_gram(const ChunkSource& src, bool has_base, at::ScalarType compute) {
  const size_t m = src.inputs();
  check(m <= 64, ErrorKind::Argument, "merge: at most 64 inputs per tensor stream, got ", m);
  const int64_t chunks = chunk_count(src.numel());
  std::vector<double> part(static_cast<size_t>(chunks) * m * m, 0.0);
  src.chunks(compute, [&](int64_t ch, int64_t, int64_t len, const void* const* xs) {
    double* g = part.data() + static_cast<size_t>(ch) * m * m;
    double v[64];
    auto body = [&](const auto* const* x) {
      for (int64_t j = 0; j < len; ++j) {
        const double x0 = static_cast<double>(x[0][j]);
        v[0] = x0;
        for (size_t i = 1; i < m; ++i) v[i] = has_base ? static_cast<double>(x[i][j]) - x0 : static_cast<double>(x[i][j]);
        for (size_t a = 0; a < m; ++a)
          for (size_t b = a; b < m; ++b) g[a * m + b] += v[a] * v[b];
      }
    };
    if (compute == at::kDouble) body(reinterpret_cast<const double* const*>(xs));
    else body(reinterpret_cast<const float* const*>(xs));
  });
  Gram G;
  G.m = m;
  G.has_base = has_base;
  G.g.assign(m * m, 0.0);
  for (int64_t ch = 0; ch < chunks; ++ch)
    for (size_t a = 0; a < m; ++a)
      for (size_t b = a; b < m; ++b) G.g[a * m + b] += part[static_cast<size_t>(ch) * m * m + a * m + b];
  for (size_t a = 0; a < m; ++a)
    for (size_t b = 0; b < a; ++b) G.g[a * m + b] = G.g[b * m + a];
  return G;
}

// ---- rank bounds ----

namespace {

// Per-thread histograms for one pass: each thread registers its own the first time it sees a pass.
struct Histograms {
  std::mutex mu;
  std::vector<std::vector<int64_t>*> all;
  uint64_t id;
  static std::atomic<uint64_t> next;
  Histograms() : id(next.fetch_add(1) + 1) {}
  std::vector<int64_t>& mine() {
    thread_local std::vector<int64_t> h;
    thread_local uint64_t seen = 0;
    if (seen != id) {
      h.assign(65536, 0);
      seen = id;
      std::lock_guard<std::mutex> lock(mu);
      all.push_back(&h);
    }
    return h;
  }
  std::vector<int64_t> sum() const {
    std::vector<int64_t> s(65536, 0);
    for (const auto* h : all)
      for (size_t i = 0; i < s.size(); ++i) s[i] += (*h)[i];
    return s;
  }
};
std::atomic<uint64_t> Histograms::next{0};

template <typename Acc>
RankBound rank_bound_t(const ChunkSource& src, size_t k, int64_t b) {
  using U = decltype(abs_key<Acc>(Acc(0), Acc(0)));
  constexpr int W = static_cast<int>(sizeof(U) * 8);
  RankBound rb;
  rb.n = src.numel();
  rb.b = std::max<int64_t>(0, std::min(b, rb.n));
  if (rb.none() || rb.all()) return rb;
  // The entry at descending rank r = b − 1, 16 bits at a time from the top.
  int64_t r = rb.b - 1;
  U prefix = 0;
  int64_t equal = 0;
  for (int shift = W - 16; shift >= 0; shift -= 16) {
    Histograms hs;
    const int high = shift + 16;  // bits above this pass's are fixed to `prefix`
    src.chunks(acc_type<Acc>(), [&](int64_t, int64_t, int64_t len, const void* const* xs) {
      auto& h = hs.mine();
      const Acc* x0 = static_cast<const Acc*>(xs[0]);
      const Acc* xk = static_cast<const Acc*>(xs[k]);
      for (int64_t j = 0; j < len; ++j) {
        const U key = abs_key<Acc>(xk[j], x0[j]);
        if (high >= W || (key >> high) == (prefix >> high)) ++h[static_cast<size_t>((key >> shift) & 0xffff)];
      }
    });
    const std::vector<int64_t> h = hs.sum();
    int64_t above = 0;
    int bucket = 65535;
    for (; bucket > 0; --bucket) {
      if (above + h[static_cast<size_t>(bucket)] > r) break;
      above += h[static_cast<size_t>(bucket)];
    }
    r -= above;
    prefix |= static_cast<U>(bucket) << shift;
    equal = h[static_cast<size_t>(bucket)];
  }
  rb.key = static_cast<uint64_t>(prefix);
  rb.ties = r + 1;  // of the `equal` entries at T, the first r + 1 are within the b largest
  if (rb.ties < equal) {
    const int64_t chunks = chunk_count(rb.n);
    std::vector<int64_t> per(static_cast<size_t>(chunks), 0);
    src.chunks(acc_type<Acc>(), [&](int64_t ch, int64_t, int64_t len, const void* const* xs) {
      const Acc* x0 = static_cast<const Acc*>(xs[0]);
      const Acc* xk = static_cast<const Acc*>(xs[k]);
      int64_t c = 0;
      for (int64_t j = 0; j < len; ++j) c += abs_key<Acc>(xk[j], x0[j]) == prefix;
      per[static_cast<size_t>(ch)] = c;
    });
    rb.before.assign(static_cast<size_t>(chunks), 0);
    for (int64_t ch = 1; ch < chunks; ++ch) rb.before[static_cast<size_t>(ch)] = rb.before[static_cast<size_t>(ch - 1)] + per[static_cast<size_t>(ch - 1)];
  }
  return rb;
}

}  // namespace

RankBound rank_bound(const ChunkSource& src, size_t k, int64_t b, at::ScalarType compute) {
  return compute == at::kDouble ? rank_bound_t<double>(src, k, b) : rank_bound_t<float>(src, k, b);
}

// ---- the combination methods ----

namespace {

template <typename Acc>
bool stream_combine(const ChunkSource& src, const std::vector<double>& coeffs, const ChunkSink& sink) {
  const std::vector<Acc> c(coeffs.begin(), coeffs.end());
  const size_t m = src.inputs();
  std::atomic<bool> bad{false};
  const at::ScalarType out = sink.dtype();
  src.chunks(acc_type<Acc>(), [&](int64_t, int64_t start, int64_t len, const void* const* xs) {
    thread_local std::vector<Acc> acc;
    thread_local std::vector<double> obuf;  // aligned for any output dtype
    if (acc.size() < static_cast<size_t>(kChunk)) acc.resize(static_cast<size_t>(kChunk));
    if (obuf.size() < static_cast<size_t>(kChunk)) obuf.resize(static_cast<size_t>(kChunk));
    std::fill(acc.begin(), acc.begin() + len, Acc(0));
    for (size_t i = 0; i < m; ++i) {
      const Acc* x = static_cast<const Acc*>(xs[i]);
      const Acc ci = c[i];
      for (int64_t j = 0; j < len; ++j) acc[static_cast<size_t>(j)] += ci * x[j];
    }
    if (convert_out(acc_type<Acc>(), acc.data(), out, obuf.data(), len)) bad = true;
    sink.write(start, len, obuf.data());
  });
  return bad;
}

}  // namespace

bool streams(const MergeSpec& spec, int64_t dim) { return find(spec.method).streams(spec, dim); }

bool stream_merge(const std::string& name, const MergeSpec& spec, bool has_base, const ChunkSource& src,
                  const ChunkSink& sink) {
  const Method& m = find(spec.method);
  check(spec.compute == at::kFloat || spec.compute == at::kDouble, ErrorKind::DType,
        "merge: compute dtype must be float32 or float64, got ", c10::toString(spec.compute));
  const Args args{name, spec, src.inputs() - (has_base ? 1 : 0), has_base};
  if (m.coefficients != nullptr) {
    const Gram g = m.uses_gram ? stream_gram(src, has_base, spec.compute) : Gram{};
    const std::vector<double> c = m.coefficients(args, g);
    return spec.compute == at::kDouble ? stream_combine<double>(src, c, sink) : stream_combine<float>(src, c, sink);
  }
  check(m.stream != nullptr, ErrorKind::State, "merge: ", spec.method, " does not stream");
  return m.stream(args, src, sink);
}

}  // namespace merge
}  // namespace tangent
