#include "../merge_files.h"
#include "../merge/stream.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csetjmp>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <type_traits>

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace tangent {
namespace {

constexpr int64_t kFileChunk = 65536;  // elements per read: 256 KiB of float32 per input
constexpr int64_t kTile = 16384;       // elements per accumulator tile, as ops.h's combine
// A tensor whose inputs span more than this together drops its mapped pages chunk by chunk as it
// goes (smaller ones once merged, so the passes of the streamed methods find them still mapped):
// the resident set stays within a fixed budget whatever the model size.
constexpr uint64_t kDropBehind = 256ull << 20;

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

// ---------------------------------------------------------------------------------------------
// Memory-mapped inputs, with SIGBUS turned into an error.
//
// Task arithmetic reads every input byte once: through a read-only shared mapping of the page
// cache it is not copied (positioned reads copy all of it). A mapped file that shrinks under us
// (truncated or rewritten in place by another process) or whose storage fails makes the access
// raise SIGBUS; the reading loops run under a per-thread guard that jumps back to its start and
// reports an IO error naming the file and byte. Guarded code holds only trivially destructible
// state (raw pointers, a local accumulator), so leaving it by siglongjmp skips no destructor.
// A SIGBUS outside a guard goes to the handler that was installed before ours (or the default
// action, as if ours were not there).

struct FaultJump {
  sigjmp_buf jb;
  void* volatile addr = nullptr;
};
thread_local FaultJump* t_guard = nullptr;
struct sigaction g_prev_bus;
std::once_flag g_bus_once;
bool g_bus_ok = false;

void on_sigbus(int sig, siginfo_t* si, void* uc) {
  FaultJump* g = t_guard;
  if (g != nullptr) {
    t_guard = nullptr;
    g->addr = si->si_addr;
    siglongjmp(g->jb, 1);
  }
  if (g_prev_bus.sa_flags & SA_SIGINFO) {
    if (g_prev_bus.sa_sigaction != nullptr) return g_prev_bus.sa_sigaction(sig, si, uc);
  } else if (g_prev_bus.sa_handler != SIG_DFL && g_prev_bus.sa_handler != SIG_IGN && g_prev_bus.sa_handler != nullptr) {
    return g_prev_bus.sa_handler(sig);
  }
  // Default action: returning re-runs the faulting access, which now terminates the process.
  ::signal(SIGBUS, SIG_DFL);
}

bool install_sigbus_handler() {
  std::call_once(g_bus_once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    g_bus_ok = ::sigaction(SIGBUS, &sa, &g_prev_bus) == 0;
  });
  return g_bus_ok;
}

// Every input file mapped whole (read-only, shared with the page cache); base == nullptr where
// mapping is not possible (then the chunks are read with pread).
struct Mappings {
  struct Map {
    const char* base = nullptr;
    uint64_t size = 0;   // the file's size when it was mapped
    bool sized = false;  // size known (fstat worked)
  };
  std::vector<Map> maps;

  explicit Mappings(const std::vector<OpenFile>& files, bool want) : maps(files.size()) {
    const bool guard = want && install_sigbus_handler();
    for (size_t i = 0; i < files.size(); ++i) {
      struct stat st;
      if (::fstat(files[i].fd, &st) != 0 || !S_ISREG(st.st_mode)) continue;
      maps[i].size = static_cast<uint64_t>(st.st_size);
      maps[i].sized = true;
      if (!guard || st.st_size == 0) continue;
      void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, files[i].fd, 0);
      if (p == MAP_FAILED) continue;
      ::madvise(p, static_cast<size_t>(st.st_size), MADV_SEQUENTIAL);
      maps[i].base = static_cast<const char*>(p);
    }
  }
  ~Mappings() {
    for (const Map& m : maps)
      if (m.base != nullptr) ::munmap(const_cast<char*>(m.base), static_cast<size_t>(m.size));
  }
  Mappings(const Mappings&) = delete;
  Mappings& operator=(const Mappings&) = delete;

  // Unmaps the pages of [off, off + len) of file i from this process (they stay in the page cache;
  // a later read faults them back in): mapped input pages count in the resident set, and a merge
  // keeps it bounded by dropping what it has read.
  void drop(size_t i, uint64_t off, uint64_t len) const {
    const Map& m = maps[i];
    if (m.base == nullptr || len == 0 || off >= m.size) return;
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const uint64_t a = off / page * page, b = std::min(m.size, off + len);
    ::madvise(const_cast<char*>(m.base) + a, static_cast<size_t>(b - a), MADV_DONTNEED);
  }

  // Which file a faulting address lies in (-1: none), and its byte offset there.
  int owner(const void* addr, uint64_t* off) const {
    const auto a = reinterpret_cast<uintptr_t>(addr);
    for (size_t i = 0; i < maps.size(); ++i) {
      const auto b = reinterpret_cast<uintptr_t>(maps[i].base);
      if (maps[i].base != nullptr && a >= b && a - b < maps[i].size) {
        *off = a - b;
        return static_cast<int>(i);
      }
    }
    return -1;
  }
};

// Failure reported after a guarded read faulted.
[[noreturn]] void fail_fault(const std::vector<OpenFile>& files, const Mappings& maps, const void* addr,
                             const std::string& tensor) {
  uint64_t off = 0;
  const int i = maps.owner(addr, &off);
  if (i < 0) fail(ErrorKind::IO, "merge: tensor '", tensor, "': SIGBUS reading a mapped input");
  fail(ErrorKind::IO, where(files[static_cast<size_t>(i)], tensor), ": could not read byte ", off,
       " (the file was truncated or replaced while it was being merged, or its storage failed)");
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

// Task arithmetic, chunk by chunk: per chunk, K+1 input spans (mapped, or read into per-thread
// buffers), combine, check, write. Chunks run on libtorch's intra-op threads. Returns whether any
// output is non-finite.
template <typename In, typename Acc, typename Out>
bool task_arithmetic_file(const std::vector<OpenFile>& files, const Mappings& maps, const OpenFile& out,
                          const FileMergeItem& it, const std::vector<double>& coeffs, int64_t n, bool check_finite) {
  const size_t K1 = it.inputs.size();
  const std::vector<Acc> c(coeffs.begin(), coeffs.end());
  const int64_t chunks = (n + kFileChunk - 1) / kFileChunk;
  // Mapped when every input is (and aligned for In); otherwise every chunk is read with pread.
  bool mapped = true;
  for (const FileSpan& sp : it.inputs) {
    const auto& m = maps.maps[static_cast<size_t>(sp.file)];
    mapped = mapped && m.base != nullptr && (reinterpret_cast<uintptr_t>(m.base) + sp.offset) % alignof(In) == 0;
  }
  const bool drop = static_cast<uint64_t>(n) * sizeof(In) * K1 > kDropBehind;
  std::atomic<bool> bad{false};
  std::atomic<void*> fault{nullptr};
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    // Per-thread buffers, kept between calls (aligned for any dtype: vectors of double).
    thread_local std::vector<double> inbuf, outbuf;
    const size_t in_elems = (kFileChunk * sizeof(In) + sizeof(double) - 1) / sizeof(double);
    const size_t out_elems = (kFileChunk * sizeof(Out) + sizeof(double) - 1) / sizeof(double);
    if (!mapped && inbuf.size() < K1 * in_elems) inbuf.resize(K1 * in_elems);
    if (outbuf.size() < out_elems) outbuf.resize(out_elems);
    std::vector<const In*> ptrs(K1);
    auto* o = reinterpret_cast<Out*>(outbuf.data());
    FaultJump guard;
    for (int64_t ch = begin; ch < end && fault.load(std::memory_order_relaxed) == nullptr; ++ch) {
      const int64_t s = ch * kFileChunk;
      const int64_t len = std::min(kFileChunk, n - s);
      for (size_t k = 0; k < K1; ++k) {
        const FileSpan& sp = it.inputs[k];
        if (mapped) {
          ptrs[k] = reinterpret_cast<const In*>(maps.maps[static_cast<size_t>(sp.file)].base + sp.offset) + s;
        } else {
          auto* dst = reinterpret_cast<In*>(inbuf.data() + k * in_elems);
          pread_fully(files[sp.file], dst, static_cast<size_t>(len) * sizeof(In), sp.offset + static_cast<uint64_t>(s) * sizeof(In), it.name);
          ptrs[k] = dst;
        }
      }
      // Mapped inputs are read only here, under the guard (a SIGBUS lands back at sigsetjmp).
      if (mapped) {
        if (sigsetjmp(guard.jb, 1) != 0) {
          fault = guard.addr;
          return;
        }
        t_guard = &guard;
      }
      combine_span<In, Acc, Out>(ptrs, c, o, len);
      t_guard = nullptr;
      if (mapped && drop)
        for (const FileSpan& sp : it.inputs)
          maps.drop(static_cast<size_t>(sp.file), sp.offset + static_cast<uint64_t>(s) * sizeof(In), static_cast<uint64_t>(len) * sizeof(In));
      if (check_finite && any_non_finite(o, len)) bad = true;
      pwrite_fully(out, o, static_cast<size_t>(len) * sizeof(Out), it.out_offset + static_cast<uint64_t>(s) * sizeof(Out), it.name);
    }
  });
  if (void* a = fault.load()) fail_fault(files, maps, a, it.name);
  return bad;
}

// The streamed methods (merge/stream.h): the item's inputs chunk by chunk — converted to the
// compute dtype from the maps under the SIGBUS guard (or from positioned reads) into per-thread
// buffers — and the output written with positioned writes.
class FileChunks : public merge::ChunkSource {
 public:
  FileChunks(const std::vector<OpenFile>& files, const Mappings& maps, const FileMergeItem& it, int64_t n)
      : files_(files), maps_(maps), it_(it), n_(n) {
    for (const FileSpan& sp : it.inputs) {
      const auto& m = maps.maps[static_cast<size_t>(sp.file)];
      mapped_ = mapped_ && m.base != nullptr;
    }
  }
  int64_t numel() const override { return n_; }
  size_t inputs() const override { return it_.inputs.size(); }
  void chunks(at::ScalarType compute, const merge::ChunkFn& fn, int64_t chunk = merge::kChunk) const override {
    const size_t K1 = it_.inputs.size();
    std::vector<size_t> in_sizes(K1);
    std::vector<merge::ConvertFn> converts(K1);
    size_t in_size = 0;  // the widest input's
    for (size_t k = 0; k < K1; ++k) {
      in_sizes[k] = c10::elementSize(it_.dtype_of(k));
      converts[k] = merge::converter(it_.dtype_of(k), compute);
      in_size = std::max(in_size, in_sizes[k]);
    }
    const size_t acc_size = c10::elementSize(compute);
    const int64_t chunks = (n_ + chunk - 1) / chunk;
    std::atomic<void*> fault{nullptr};
    const bool drop = static_cast<uint64_t>(n_) * in_size * K1 > kDropBehind;
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      thread_local std::vector<double> raw, conv;  // aligned for any dtype
      const size_t raw_elems = (static_cast<size_t>(chunk) * in_size + 7) / 8;
      const size_t conv_elems = (static_cast<size_t>(chunk) * acc_size + 7) / 8;
      if (!mapped_ && raw.size() < raw_elems) raw.resize(raw_elems);
      if (conv.size() < K1 * conv_elems) conv.resize(K1 * conv_elems);
      std::vector<const void*> ptrs(K1);
      for (size_t k = 0; k < K1; ++k) ptrs[k] = conv.data() + k * conv_elems;
      FaultJump guard;
      for (int64_t ch = begin; ch < end && fault.load(std::memory_order_relaxed) == nullptr; ++ch) {
        const int64_t s = ch * chunk, len = std::min(chunk, n_ - s);
        for (size_t k = 0; k < K1; ++k) {
          const FileSpan& sp = it_.inputs[k];
          const uint64_t off = sp.offset + static_cast<uint64_t>(s) * in_sizes[k];
          const merge::ConvertFn convert = converts[k];
          void* dst = conv.data() + k * conv_elems;
          if (mapped_) {
            const char* src = maps_.maps[static_cast<size_t>(sp.file)].base + off;
            if (sigsetjmp(guard.jb, 1) != 0) {
              fault = guard.addr;
              return;
            }
            t_guard = &guard;
            convert(src, dst, len);
            t_guard = nullptr;
            if (drop) maps_.drop(static_cast<size_t>(sp.file), off, static_cast<uint64_t>(len) * in_sizes[k]);
          } else {
            pread_fully(files_[static_cast<size_t>(sp.file)], raw.data(), static_cast<size_t>(len) * in_sizes[k], off, it_.name);
            convert(raw.data(), dst, len);
          }
        }
        fn(ch, s, len, ptrs.data());
      }
      if (chunk > 4 * merge::kChunk) std::vector<double>().swap(raw), std::vector<double>().swap(conv);  // a long DELLA row's
    });
    if (void* a = fault.load()) fail_fault(files_, maps_, a, it_.name);
  }

 private:
  const std::vector<OpenFile>& files_;
  const Mappings& maps_;
  const FileMergeItem& it_;
  int64_t n_;
  bool mapped_ = true;
};

class FileSink : public merge::ChunkSink {
 public:
  FileSink(const OpenFile& out, const FileMergeItem& it) : out_(out), it_(it) {}
  at::ScalarType dtype() const override { return it_.out; }
  void write(int64_t start, int64_t len, const void* data) const override {
    const size_t esz = c10::elementSize(it_.out);
    pwrite_fully(out_, data, static_cast<size_t>(len) * esz, it_.out_offset + static_cast<uint64_t>(start) * esz, it_.name);
  }

 private:
  const OpenFile& out_;
  const FileMergeItem& it_;
};

// Any method, whole tensors (on `device`): read every input, merge_tensor, check, write.
bool generic_file(const std::vector<OpenFile>& files, const OpenFile& out, const FileMergeItem& it, MergeSpec spec,
                  bool has_base, bool check_finite, const at::Device& device) {
  std::vector<at::Tensor> in;
  for (size_t k = 0; k < it.inputs.size(); ++k) {
    const FileSpan& sp = it.inputs[k];
    at::Tensor t = at::empty(it.shape, at::TensorOptions().dtype(it.dtype_of(k)));
    pread_fully(files[sp.file], t.data_ptr(), t.nbytes(), sp.offset, it.name);
    if (!it.input_dtypes.empty()) t = t.to(spec.compute);  // mixed float dtypes: all in the compute dtype
    in.push_back(device.is_cpu() ? t : t.to(device));
  }
  spec.out = it.out;
  const std::vector<at::Tensor> models(in.begin() + (has_base ? 1 : 0), in.end());
  at::Tensor m = merge_tensor(it.name, has_base ? in[0] : at::Tensor(), models, spec);
  in.clear();
  m = (device.is_cpu() ? m : m.to(at::kCPU)).contiguous();
  check(m.scalar_type() == it.out && static_cast<uint64_t>(m.numel()) == static_cast<uint64_t>(in[0].numel()),
        ErrorKind::State, "merge: tensor '", it.name, "': the merge produced ", c10::toString(m.scalar_type()),
        shape_str(m.sizes()), ", expected ", c10::toString(it.out), shape_str(it.shape));
  bool bad = false;
  if (check_finite && at::isFloatingType(m.scalar_type())) bad = !at::isfinite(m).all().item<bool>();
  pwrite_fully(out, m.data_ptr(), m.nbytes(), it.out_offset, it.name);
  return bad;
}

}  // namespace

// TANGENT_MERGE_MMAP=0 reads with positioned reads instead (the bench's "before", or a filesystem
// where mapping is unwelcome).
bool merge_files_use_mmap = [] {
  const char* e = std::getenv("TANGENT_MERGE_MMAP");
  return e == nullptr || std::strcmp(e, "0") != 0;
}();
void (*merge_files_after_map_hook)() = nullptr;

std::vector<std::string> merge_file_tensors(const std::vector<OpenFile>& files, const OpenFile& out,
                                            const std::vector<FileMergeItem>& items,
                                            const std::vector<MergeSpec>& specs, bool check_finite,
                                            const at::Device& device) {
  const bool on_cpu = device.is_cpu();
  for (const MergeSpec& spec : specs) {
    check(spec.compute == at::kFloat || spec.compute == at::kDouble, ErrorKind::DType,
          "merge: compute dtype must be float32 or float64, got ", c10::toString(spec.compute));
    merge_method(spec.method);  // an unknown name is refused before any tensor is read
  }
  std::vector<std::string> non_finite;
  // The fused and streamed passes read through the maps (a whole-tensor merge reads with pread).
  const Mappings maps(files, on_cpu && merge_files_use_mmap);
  for (const FileMergeItem& it : items) {
    check(it.spec < specs.size(), ErrorKind::Argument, "merge: tensor '", it.name, "' names spec ", it.spec, " of ",
          specs.size());
    const MergeSpec& spec = specs[it.spec];
    const bool has_base = it.base;
    check(it.inputs.size() > (has_base ? 1u : 0u), ErrorKind::Argument, "merge: tensor '", it.name, "' has no models");
    const size_t models = it.inputs.size() - (has_base ? 1 : 0);
    check(has_base || merge_method(spec.method).base != BaseUse::Required, ErrorKind::Argument, "merge: ", spec.method,
          " needs a base model (tensor '", it.name, "')");
    check(spec.weights.empty() || spec.weights.size() == models, ErrorKind::Argument,
          "merge: tensor '", it.name, "' has ", it.inputs.size(), " inputs for ", spec.weights.size(), " weights");
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
    // Every span inside its file as it is now (a shorter file: the error a short read would give).
    check(it.input_dtypes.empty() || it.input_dtypes.size() == it.inputs.size(), ErrorKind::Argument, "merge: tensor '",
          it.name, "' has ", it.input_dtypes.size(), " input dtypes for ", it.inputs.size(), " inputs");
    const bool mixed = !it.input_dtypes.empty();
    for (at::ScalarType t : it.input_dtypes)
      check(at::isFloatingType(t) && at::isFloatingType(it.dtype), ErrorKind::DType, "merge: tensor '", it.name,
            "': inputs of different dtypes must all be floating point, got ", c10::toString(t));
    for (size_t k = 0; k < it.inputs.size(); ++k) {
      const FileSpan& sp = it.inputs[k];
      const auto& m = maps.maps[static_cast<size_t>(sp.file)];
      const uint64_t need = static_cast<uint64_t>(n) * static_cast<uint64_t>(c10::elementSize(it.dtype_of(k)));
      if (m.sized && (sp.offset > m.size || need > m.size - sp.offset))
        fail(ErrorKind::IO, where(files[static_cast<size_t>(sp.file)], it.name), ": unexpected end of file at byte ", m.size,
             " (the tensor's data ends at byte ", sp.offset + need, ")");
    }
    if (merge_files_after_map_hook) merge_files_after_map_hook();
    const bool is_float = at::isFloatingType(it.dtype);
    check(!is_float || at::isFloatingType(it.out), ErrorKind::DType, "merge: tensor '", it.name,
          "': output dtype ", c10::toString(it.out), " for a floating-point input");
    check(is_float || it.out == it.dtype, ErrorKind::DType, "merge: tensor '", it.name, "': integer tensor (",
          c10::toString(it.dtype), ") cannot be written as ", c10::toString(it.out));
    bool bad = false;
    if (is_float && !on_cpu) {
      bad = generic_file(files, out, it, spec, has_base, check_finite, device);
    } else if (is_float && spec.method == "task_arithmetic" && mixed) {
      // Mixed input dtypes: the same coefficients through the streamed combine (each input converted
      // from its own dtype).
      const FileChunks src(files, maps, it, n);
      const FileSink sink(out, it);
      bad = merge::stream_combine_coefficients(src, merge::task_arithmetic_coefficients(spec, models), spec.compute, sink) && check_finite;
    } else if (is_float && spec.method == "task_arithmetic") {
      // θ0 + λ Σ w_k (θ_k − θ0) = (1 − λ Σ w_k) θ0 + Σ λ w_k θ_k, as merge_tensor computes it
      // (native/merge/task_arithmetic.cpp; with normalize the weights divided by their sum first).
      const std::vector<double> c = merge::task_arithmetic_coefficients(spec, models);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, it.dtype, "merge_files_in", [&] {
        using In = scalar_t;
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, it.out, "merge_files_out", [&] {
          using Out = scalar_t;
          bad = spec.compute == at::kDouble ? task_arithmetic_file<In, double, Out>(files, maps, out, it, c, n, check_finite)
                                            : task_arithmetic_file<In, float, Out>(files, maps, out, it, c, n, check_finite);
        });
      });
    } else if (is_float && merge::streams(spec, static_cast<int64_t>(it.shape.size()))) {
      // Bounded memory: a few chunk buffers per thread, whatever the tensor's size.
      MergeSpec s = spec;
      s.out = it.out;
      const FileChunks src(files, maps, it, n);
      const FileSink sink(out, it);
      bad = merge::stream_merge(it.name, s, has_base, it.shape, src, sink) && check_finite;
    } else {
      bad = generic_file(files, out, it, spec, has_base, check_finite, at::Device(at::kCPU));
    }
    if (bad) non_finite.push_back(it.name);
    for (size_t k = 0; k < it.inputs.size(); ++k)
      maps.drop(static_cast<size_t>(it.inputs[k].file), it.inputs[k].offset, static_cast<uint64_t>(n) * c10::elementSize(it.dtype_of(k)));
  }
  return non_finite;
}

}  // namespace tangent
