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

void TensorSource::chunks(at::ScalarType compute, const ChunkFn& fn, int64_t chunk) const {
  const size_t m = xs_.size();
  const at::ScalarType in = xs_[0].scalar_type();
  const size_t esz = c10::elementSize(compute);
  const bool direct = in == compute;
  const ConvertFn convert = converter(in, compute);
  const int64_t chunks = (n_ + chunk - 1) / chunk;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<char> buf(direct ? 0 : m * static_cast<size_t>(chunk) * esz);
    std::vector<const void*> ptrs(m);
    for (int64_t ch = begin; ch < end; ++ch) {
      const int64_t s = ch * chunk, len = std::min(chunk, n_ - s);
      for (size_t i = 0; i < m; ++i) {
        const char* p = static_cast<const char*>(xs_[i].data_ptr()) + static_cast<size_t>(s) * xs_[i].element_size();
        if (direct) {
          ptrs[i] = p;
        } else {
          char* d = buf.data() + i * static_cast<size_t>(chunk) * esz;
          convert(p, d, len);
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

namespace {

// One chunk's inner products, in float64, into g (m × m, upper triangle). For M inputs known at
// compile time the sums live in registers as pairs of doubles (GCC/Clang vector extensions: SSE2's
// packed double arithmetic), four interleaved lanes — entries j ≡ 0, 1, 2, 3 (mod 4) — added in a
// fixed order at the end; any m through the generic loop. Either way the result depends only on
// the chunk's values, not on threads.
using v2d = double __attribute__((vector_size(16)));

template <typename T>
inline v2d load2(const T* p) {
  return v2d{static_cast<double>(p[0]), static_cast<double>(p[1])};
}

template <int M, typename T>
void gram_fixed(const T* const* x, int64_t len, bool has_base, double* g) {
  constexpr int P = M * (M + 1) / 2;
  v2d s0[P], s1[P];
  for (int p = 0; p < P; ++p) s0[p] = s1[p] = v2d{0.0, 0.0};
  auto add = [&](v2d* acc, int64_t j) {
    v2d v[M];
    v[0] = load2(x[0] + j);
    for (int i = 1; i < M; ++i) v[i] = has_base ? load2(x[i] + j) - v[0] : load2(x[i] + j);
    int p = 0;
    for (int a = 0; a < M; ++a)
      for (int b = a; b < M; ++b) acc[p++] += v[a] * v[b];
  };
  int64_t j = 0;
  for (; j + 3 < len; j += 4) {
    add(s0, j);
    add(s1, j + 2);
  }
  double tail[P] = {};
  for (; j < len; ++j) {
    double v[M];
    v[0] = static_cast<double>(x[0][j]);
    for (int i = 1; i < M; ++i) v[i] = has_base ? static_cast<double>(x[i][j]) - v[0] : static_cast<double>(x[i][j]);
    int p = 0;
    for (int a = 0; a < M; ++a)
      for (int b = a; b < M; ++b) tail[p++] += v[a] * v[b];
  }
  int p = 0;
  for (int a = 0; a < M; ++a)
    for (int b = a; b < M; ++b, ++p) g[a * M + b] = ((s0[p][0] + s0[p][1]) + (s1[p][0] + s1[p][1])) + tail[p];
}

template <typename T>
void gram_chunk(const T* const* x, int64_t len, size_t m, bool has_base, double* g) {
  switch (m) {
    case 1: return gram_fixed<1>(x, len, has_base, g);
    case 2: return gram_fixed<2>(x, len, has_base, g);
    case 3: return gram_fixed<3>(x, len, has_base, g);
    case 4: return gram_fixed<4>(x, len, has_base, g);
    case 5: return gram_fixed<5>(x, len, has_base, g);
    default: break;
  }
  double v[64];
  for (int64_t j = 0; j < len; ++j) {
    v[0] = static_cast<double>(x[0][j]);
    for (size_t i = 1; i < m; ++i) v[i] = has_base ? static_cast<double>(x[i][j]) - v[0] : static_cast<double>(x[i][j]);
    for (size_t a = 0; a < m; ++a)
      for (size_t b = a; b < m; ++b) g[a * m + b] += v[a] * v[b];
  }
}

}  // namespace

Gram stream_gram(const ChunkSource& src, bool has_base, at::ScalarType compute) {
  const size_t m = src.inputs();
  check(m <= 64, ErrorKind::Argument, "merge: at most 64 inputs per tensor stream, got ", m);
  const int64_t chunks = chunk_count(src.numel());
  std::vector<double> part(static_cast<size_t>(chunks) * m * m, 0.0);
  src.chunks(compute, [&](int64_t ch, int64_t, int64_t len, const void* const* xs) {
    double* g = part.data() + static_cast<size_t>(ch) * m * m;
    if (compute == at::kDouble) gram_chunk(reinterpret_cast<const double* const*>(xs), len, m, has_base, g);
    else gram_chunk(reinterpret_cast<const float* const*>(xs), len, m, has_base, g);
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

// Per-thread histograms for one pass, `count` of them (one per request): each thread registers its
// block the first time it sees the pass.
struct Histograms {
  std::mutex mu;
  std::vector<std::vector<int64_t>*> all;
  size_t count;
  uint64_t id;
  static std::atomic<uint64_t> next;
  explicit Histograms(size_t count) : count(count), id(next.fetch_add(1) + 1) {}
  int64_t* mine() {
    thread_local std::vector<int64_t> h;
    thread_local uint64_t seen = 0;
    if (seen != id) {
      h.assign(count * 65536, 0);
      seen = id;
      std::lock_guard<std::mutex> lock(mu);
      all.push_back(&h);
    }
    return h.data();
  }
  // Request q's histogram, summed over the threads.
  std::vector<int64_t> sum(size_t q) const {
    std::vector<int64_t> s(65536, 0);
    for (const auto* h : all)
      for (size_t i = 0; i < s.size(); ++i) s[i] += (*h)[q * 65536 + i];
    return s;
  }
};
std::atomic<uint64_t> Histograms::next{0};

}  // namespace

std::vector<RankBound> rank_bounds(const ChunkSource& src, at::ScalarType compute, int key_bits, const KeyFn& keys,
                                   const std::vector<RankRequest>& reqs) {
  const int64_t n = src.numel();
  const int64_t chunks = chunk_count(n);
  std::vector<RankBound> out(reqs.size());
  std::vector<size_t> live;  // the requests that need selecting
  size_t sets = 0;
  for (size_t q = 0; q < reqs.size(); ++q) {
    out[q].n = n;
    out[q].b = std::max<int64_t>(0, std::min(reqs[q].b, n));
    sets = std::max(sets, reqs[q].set + 1);
    if (!out[q].none() && !out[q].all()) live.push_back(q);
  }
  if (live.empty()) return out;
  std::vector<char> used(sets, 0);
  for (size_t q : live) used[reqs[q].set] = 1;
  // Per request: the descending rank r = b − 1 still to find among the entries that share the key
  // bits fixed so far, those bits, and how many entries share the final key.
  std::vector<int64_t> r(reqs.size(), 0), equal(reqs.size(), 0);
  std::vector<uint64_t> prefix(reqs.size(), 0);
  for (size_t q : live) r[q] = out[q].b - 1;
  using Body = std::function<void(int64_t ch, int64_t len, const uint64_t* const* k)>;
  auto each_chunk_keys = [&](const Body& body) {
    src.chunks(compute, [&](int64_t ch, int64_t, int64_t len, const void* const* xs) {
      thread_local std::vector<uint64_t> buf;
      if (buf.size() < sets * static_cast<size_t>(len)) buf.resize(sets * static_cast<size_t>(len));
      const uint64_t* k[64] = {};
      for (size_t set = 0; set < sets; ++set)
        if (used[set]) {
          keys(set, xs, len, buf.data() + set * static_cast<size_t>(len));
          k[set] = buf.data() + set * static_cast<size_t>(len);
        }
      body(ch, len, k);
    });
  };
  check(sets <= 64, ErrorKind::Argument, "merge: at most 64 key sets, got ", sets);
  for (int shift = key_bits - 16; shift >= 0; shift -= 16) {
    const int high = shift + 16;  // bits at and above it are fixed to the prefix
    Histograms hs(reqs.size());
    each_chunk_keys([&](int64_t, int64_t len, const uint64_t* const* k) {
      int64_t* block = hs.mine();
      for (size_t q : live) {
        int64_t* h = block + q * 65536;
        const uint64_t* key = k[reqs[q].set];
        if (high >= key_bits) {
          for (int64_t j = 0; j < len; ++j) ++h[static_cast<size_t>((key[j] >> shift) & 0xffff)];
        } else {
          const uint64_t want = prefix[q] >> high;
          for (int64_t j = 0; j < len; ++j)
            if ((key[j] >> high) == want) ++h[static_cast<size_t>((key[j] >> shift) & 0xffff)];
        }
      }
    });
    for (size_t q : live) {
      const std::vector<int64_t> h = hs.sum(q);
      int64_t above = 0;
      int bucket = 65535;
      for (; bucket > 0; --bucket) {
        if (above + h[static_cast<size_t>(bucket)] > r[q]) break;
        above += h[static_cast<size_t>(bucket)];
      }
      r[q] -= above;
      prefix[q] |= static_cast<uint64_t>(bucket) << shift;
      equal[q] = h[static_cast<size_t>(bucket)];
    }
  }
  std::vector<size_t> tied;
  for (size_t q : live) {
    out[q].key = prefix[q];
    out[q].ties = r[q] + 1;  // of the `equal` entries at T, the first r + 1 are within the b largest
    if (out[q].ties < equal[q]) tied.push_back(q);
  }
  if (!tied.empty()) {
    std::vector<std::vector<int64_t>> per(reqs.size());
    for (size_t q : tied) per[q].assign(static_cast<size_t>(chunks), 0);
    each_chunk_keys([&](int64_t ch, int64_t len, const uint64_t* const* k) {
      for (size_t q : tied) {
        const uint64_t* key = k[reqs[q].set];
        int64_t c = 0;
        for (int64_t j = 0; j < len; ++j) c += key[j] == prefix[q];
        per[q][static_cast<size_t>(ch)] = c;
      }
    });
    for (size_t q : tied) {
      out[q].before.assign(static_cast<size_t>(chunks), 0);
      for (int64_t ch = 1; ch < chunks; ++ch)
        out[q].before[static_cast<size_t>(ch)] = out[q].before[static_cast<size_t>(ch - 1)] + per[q][static_cast<size_t>(ch - 1)];
    }
  }
  return out;
}

std::vector<RankBound> abs_rank_bounds(const ChunkSource& src, at::ScalarType compute, const std::vector<RankRequest>& reqs) {
  const bool dbl = compute == at::kDouble;
  return rank_bounds(src, compute, dbl ? 64 : 32, [&](size_t set, const void* const* xs, int64_t len, uint64_t* keys) {
    if (dbl) {
      const double* x0 = static_cast<const double*>(xs[0]);
      const double* xk = static_cast<const double*>(xs[set + 1]);
      for (int64_t j = 0; j < len; ++j) keys[j] = abs_key<double>(xk[j], x0[j]);
    } else {
      const float* x0 = static_cast<const float*>(xs[0]);
      const float* xk = static_cast<const float*>(xs[set + 1]);
      for (int64_t j = 0; j < len; ++j) keys[j] = abs_key<float>(xk[j], x0[j]);
    }
  }, reqs);
}

// ---- the combination methods ----

namespace {

template <typename Acc>
bool stream_combine(const ChunkSource& src, const std::vector<double>& coeffs, const ChunkSink& sink) {
  const std::vector<Acc> c(coeffs.begin(), coeffs.end());
  const size_t m = src.inputs();
  return stream_out<Acc>(src, acc_type<Acc>(), sink, [&](int64_t, int64_t, int64_t len, const Acc* const* x, Acc* acc) {
    std::fill(acc, acc + len, Acc(0));
    for (size_t i = 0; i < m; ++i) {
      const Acc ci = c[i];
      for (int64_t j = 0; j < len; ++j) acc[j] += ci * x[i][j];
    }
  });
}

}  // namespace

bool streams(const MergeSpec& spec, int64_t dim) { return find(spec.method).streams(spec, dim); }

bool stream_merge(const std::string& name, const MergeSpec& spec, bool has_base, const std::vector<int64_t>& shape,
                  const ChunkSource& src, const ChunkSink& sink) {
  const Method& m = find(spec.method);
  check(spec.compute == at::kFloat || spec.compute == at::kDouble, ErrorKind::DType,
        "merge: compute dtype must be float32 or float64, got ", c10::toString(spec.compute));
  const Args args{name, spec, src.inputs() - (has_base ? 1 : 0), has_base, shape};
  // A method with both (nuslerp) picks in its stream: the combination for whole tensors, its own
  // passes otherwise.
  if (m.stream != nullptr) return m.stream(args, src, sink);
  check(m.coefficients != nullptr, ErrorKind::State, "merge: ", spec.method, " does not stream");
  return stream_combination(args, src, sink);
}

bool stream_combine_coefficients(const ChunkSource& src, const std::vector<double>& c, at::ScalarType compute,
                                 const ChunkSink& sink) {
  return compute == at::kDouble ? stream_combine<double>(src, c, sink) : stream_combine<float>(src, c, sink);
}

bool stream_combination(const Args& args, const ChunkSource& src, const ChunkSink& sink) {
  const Method& m = find(args.spec.method);
  const at::ScalarType compute = args.spec.compute;
  const Gram g = m.uses_gram ? stream_gram(src, args.has_base, compute) : Gram{};
  const std::vector<double> c = m.coefficients(args, g);
  return compute == at::kDouble ? stream_combine<double>(src, c, sink) : stream_combine<float>(src, c, sink);
}

}  // namespace merge
}  // namespace tangent
