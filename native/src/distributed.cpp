// Process groups over c10d (see distributed.h): rendezvous laid out as PyTorch's, bounded waits,
// bucketed in-place collectives, and failures that name the rank that stopped.
#include "distributed.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
// Gloo needs its own headers (Debian: libgloo-dev); CMakeLists.txt sets TANGENT_NO_GLOO without them.
#if defined(USE_C10D_GLOO) && !defined(TANGENT_NO_GLOO)
#define TANGENT_HAVE_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

namespace tangent {
namespace {

using ms = std::chrono::milliseconds;

std::string secs(ms t) {
  std::ostringstream s;
  s << static_cast<double>(t.count()) / 1000.0 << " s";
  return s.str();
}

// A c10::Error without its C++ backtrace; anything else as it is.
std::string cause_of(std::exception_ptr p) {
  try {
    std::rethrow_exception(p);
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

std::string ranks_str(const std::vector<int>& r) {
  std::ostringstream s;
  s << (r.size() == 1 ? "rank " : "ranks ");
  for (size_t i = 0; i < r.size(); ++i) s << (i ? ", " : "") << r[i];
  return s.str();
}

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

// The local IPv4 address that routes to `host` (a UDP connect sends nothing). Binding Gloo there
// rather than to what the hostname resolves to (Debian: 127.0.1.1) makes multi-host runs work.
std::string local_address_towards(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), "9", &hints, &res) != 0 || !res) return "";
  std::string out;
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd >= 0) {
    if (connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
      sockaddr_in local{};
      socklen_t len = sizeof local;
      if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0) {
        char buf[INET_ADDRSTRLEN] = {0};
        if (inet_ntop(AF_INET, &local.sin_addr, buf, sizeof buf)) out = buf;
      }
    }
    close(fd);
  }
  freeaddrinfo(res);
  return out;
}

const char* kJoin = "tangent/join/";
const char* kBeat = "tangent/hb/";

}  // namespace

bool distributed_backend_available(const std::string& backend) {
#ifdef TANGENT_HAVE_GLOO
  if (backend == "gloo") return true;
#endif
#ifdef USE_C10D_NCCL
  if (backend == "nccl") return true;
#endif
  return false;
}

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::TCPStore> root;
  c10::intrusive_ptr<c10d::Store> default_pg;  // PrefixStore("default_pg", root), as PyTorch
  c10::intrusive_ptr<compat::C10dBackend> pg;  // the Gloo or NCCL backend itself
  // Heartbeats go through a store client of their own, from a thread of their own.
  c10::intrusive_ptr<c10d::TCPStore> beat_store;
  std::thread beat_thread;
  std::mutex beat_mu;
  std::condition_variable beat_cv;
  bool beat_stop = false;

  void stop_heartbeat() {
    {
      std::lock_guard<std::mutex> lk(beat_mu);
      beat_stop = true;
    }
    beat_cv.notify_all();
    if (beat_thread.joinable()) beat_thread.join();
    beat_store.reset();
  }
};

ProcessGroup::ProcessGroup(const ProcessGroupOptions& o) : opts_(o), impl_(std::make_unique<Impl>()) {}

ProcessGroup::~ProcessGroup() {
  if (impl_) impl_->stop_heartbeat();
}

std::shared_ptr<ProcessGroup> ProcessGroup::create(const ProcessGroupOptions& o) {
  check(o.world_size >= 1, ErrorKind::Argument, "world size must be >= 1, got ", o.world_size);
  check(o.rank >= 0 && o.rank < o.world_size, ErrorKind::Argument, "rank must lie in [0, ", o.world_size,
        "), got ", o.rank);
  check(o.port >= 0 && o.port < 65536, ErrorKind::Argument, "port must lie in [0, 65535], got ", o.port);
  check(o.timeout.count() > 0, ErrorKind::Argument, "timeout must be > 0 ms, got ", o.timeout.count());
  check(o.backend == "gloo" || o.backend == "nccl", ErrorKind::Argument, "unknown backend '", o.backend,
        "' (expected gloo or nccl)");
  check(distributed_backend_available(o.backend), ErrorKind::Argument, "backend '", o.backend,
        "' is not available in this libtorch build",
        o.backend == "nccl" ? " (NCCL needs a CUDA libtorch built with it; use gloo on CPU)" : "");
  std::shared_ptr<ProcessGroup> self(new ProcessGroup(o));
  auto& im = *self->impl_;
  const std::string me = "rank " + std::to_string(o.rank) + " of " + std::to_string(o.world_size);
  const std::string where = o.master_addr + ":" + std::to_string(o.port);

  // 1. The store: rank 0 hosts it, the others connect (each bounded by the timeout). Clients add
  //    themselves to its worker count as PyTorch's do; rank 0 does not block on it (the group's
  //    own rendezvous below names who is missing).
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(o.port);
  so.isServer = o.rank == 0;
  so.numWorkers = static_cast<size_t>(o.world_size);
  so.waitWorkers = o.rank != 0;
  so.timeout = o.timeout;
  so.multiTenant = true;
  try {
    im.root = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
  } catch (...) {
    auto cause = cause_of(std::current_exception());
    if (o.rank == 0)
      throw DistributedError(me + ": cannot host the rendezvous store on " + where + ": " + cause);
    throw DistributedError(me + ": rank 0 did not answer at the rendezvous store " + where + " within " +
                           secs(o.timeout) + " (not started, dead, or a wrong address/port): " + cause);
  }
  self->port_ = im.root->getPort();
  const std::string at = o.master_addr + ":" + std::to_string(self->port_);
  auto missing = [&]() -> std::string {
    std::vector<int> gone;
    try {
      for (int r = 0; r < o.world_size; ++r)
        if (!im.root->check({kJoin + std::to_string(r)})) gone.push_back(r);
    } catch (...) {
      return "the rendezvous store at " + at + " (hosted by rank 0) became unreachable";
    }
    if (gone.empty()) return "every rank reached the store, but the group did not form";
    return ranks_str(gone) + " did not join";
  };

  // 2. Announce this rank, and start its heartbeat.
  try {
    std::string who = host_name() + " pid " + std::to_string(getpid());
    im.root->set(kJoin + std::to_string(o.rank), std::vector<uint8_t>(who.begin(), who.end()));
  } catch (...) {
    throw DistributedError(me + ": the rendezvous store at " + at + " failed: " + cause_of(std::current_exception()));
  }
  try {
    c10d::TCPStoreOptions bo;
    bo.port = static_cast<uint16_t>(self->port_);
    bo.isServer = false;
    bo.waitWorkers = false;
    bo.timeout = o.timeout;
    im.beat_store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, bo);
    auto* impl = &im;
    const std::string key = kBeat + std::to_string(o.rank);
    const ms period = o.heartbeat;
    im.beat_thread = std::thread([impl, key, period] {
      std::unique_lock<std::mutex> lk(impl->beat_mu);
      while (!impl->beat_stop) {
        try {
          impl->beat_store->add(key, 1);
        } catch (...) {
          return;  // the store is gone: nothing left to tell
        }
        impl->beat_cv.wait_for(lk, period, [impl] { return impl->beat_stop; });
      }
    });
  } catch (...) {
    // No heartbeat: failures are still reported, only without naming the stopped rank.
  }

  // 3. The backend, on the store PyTorch's init_process_group gives it (compat.h: per version).
  const auto layout = compat::default_group_layout(o.backend);
  im.default_pg = c10::make_intrusive<c10d::PrefixStore>("default_pg", im.root);
  c10::intrusive_ptr<c10d::Store> pg_store = im.default_pg;
  for (const auto& prefix : layout.prefixes) pg_store = c10::make_intrusive<c10d::PrefixStore>(prefix, pg_store);
  try {
    if (o.backend == "gloo") {
#ifdef TANGENT_HAVE_GLOO
      auto go = c10d::ProcessGroupGloo::Options::create(o.timeout);
      std::string ifname = o.interface;
      if (ifname.empty())
        if (const char* e = std::getenv("GLOO_SOCKET_IFNAME")) ifname = e;
      if (!ifname.empty()) {
        std::stringstream ss(ifname);
        std::string one;
        while (std::getline(ss, one, ','))
          if (!one.empty()) go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(one));
      } else {
        std::string addr = o.bind_address;
        if (addr.empty()) addr = local_address_towards(o.master_addr);
        go->devices.push_back(addr.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                           : c10d::ProcessGroupGloo::createDeviceForHostname(addr));
      }
      go->threads = std::max(1, o.gloo_threads);
      im.pg = c10::make_intrusive<c10d::ProcessGroupGloo>(pg_store, o.rank, o.world_size, go);
#endif
    } else {
#ifdef USE_C10D_NCCL
      auto no = c10d::ProcessGroupNCCL::Options::create();
      no->timeout = o.timeout;
      im.pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(pg_store, o.rank, o.world_size, no);
#endif
    }
  } catch (...) {
    auto cause = cause_of(std::current_exception());
    throw DistributedError(me + ": the " + o.backend + " group did not form within " + secs(o.timeout) +
                           ": " + missing() + " (master " + at + "); cause: " + cause);
  }

  // 4. PyTorch's store-based barrier after init_process_group (where that PyTorch does one), then
  //    the group's sequence number.
  try {
    const std::string key = layout.barrier_key;
    if (layout.barrier) im.default_pg->add(key, 1);
    const auto start = std::chrono::steady_clock::now();
    while (layout.barrier && im.default_pg->add(key, 0) < o.world_size) {
      if (std::chrono::steady_clock::now() - start > o.timeout)
        throw DistributedError(me + ": " + missing() + " within " + secs(o.timeout) + " (master " + at + ")");
      std::this_thread::sleep_for(ms(10));
    }
    im.pg->setSequenceNumberForGroup();
  } catch (const DistributedError&) {
    throw;
  } catch (...) {
    throw DistributedError(me + ": rendezvous barrier failed (master " + at + "): " + cause_of(std::current_exception()));
  }
  return self;
}

// Names the ranks whose heartbeat stopped (dead or frozen), or rank 0 when the store it hosts is gone.
std::string ProcessGroup::diagnose() {
  auto& im = *impl_;
  const int W = opts_.world_size;
  std::vector<int64_t> a(W), b(W);
  const std::string at = opts_.master_addr + ":" + std::to_string(port_);
  try {
    for (int r = 0; r < W; ++r) a[r] = im.root->add(kBeat + std::to_string(r), 0);
    std::this_thread::sleep_for(std::max(ms(1000), 4 * opts_.heartbeat));
    for (int r = 0; r < W; ++r) b[r] = im.root->add(kBeat + std::to_string(r), 0);
  } catch (...) {
    return "rank 0 stopped (the rendezvous store it hosts at " + at + " is unreachable)";
  }
  std::vector<int> dead, foreign;
  for (int r = 0; r < W; ++r) {
    if (r == opts_.rank) continue;
    if (b[r] == 0) foreign.push_back(r);
    else if (b[r] == a[r]) dead.push_back(r);
  }
  std::string out;
  if (!dead.empty()) out = ranks_str(dead) + " stopped (no heartbeat for " + secs(std::max(ms(1000), 4 * opts_.heartbeat)) + ": exited, killed or frozen)";
  if (!foreign.empty())
    out += (out.empty() ? "" : "; ") + ranks_str(foreign) + " sent no heartbeat (not a tangent-edit rank): cannot tell whether it stopped";
  if (out.empty()) out = "every rank still sends its heartbeat (a mismatched collective, or the network)";
  return out;
}

template <typename F>
void ProcessGroup::run(const char* what, F&& body) {
  std::lock_guard<std::mutex> lk(mu_);
  const std::string me = "rank " + std::to_string(opts_.rank) + " of " + std::to_string(opts_.world_size);
  if (closed_) throw DistributedError(std::string(what) + " on a closed process group (" + me + ")");
  if (!broken_.empty())
    throw DistributedError(std::string(what) + ": the process group is unusable after an earlier failure (" + broken_ +
                           "); create a new group with a fresh store");
  try {
    // Parameters may be leaves that require grad (TorchScript): collectives write them in place.
    compat::NoGradGuard no_grad;
    body();
  } catch (...) {
    auto cause = cause_of(std::current_exception());
    broken_ = std::string(what) + " failed on " + me + " (master " + opts_.master_addr + ":" + std::to_string(port_) +
              ", timeout " + secs(opts_.timeout) + "): " + diagnose() + "; cause: " + cause;
    throw DistributedError(broken_);
  }
}

namespace {

// Consecutive tensors of one dtype and device, at most `cap` bytes (a larger tensor goes alone).
std::vector<std::vector<at::Tensor>> buckets(const std::vector<at::Tensor>& ts, int64_t cap) {
  std::vector<std::vector<at::Tensor>> out;
  int64_t bytes = 0;
  for (const auto& t : ts) {
    const int64_t n = t.numel() * static_cast<int64_t>(t.element_size());
    if (out.empty() || out.back().front().scalar_type() != t.scalar_type() ||
        out.back().front().device() != t.device() || bytes + n > cap) {
      out.emplace_back();
      bytes = 0;
    }
    out.back().push_back(t);
    bytes += n;
  }
  return out;
}

}  // namespace

void ProcessGroup::all_reduce(const std::vector<at::Tensor>& tensors, ReduceKind op, int64_t bucket_bytes,
                              double prescale) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    check(tensors[i].defined(), ErrorKind::Argument, "all-reduce: tensor ", i, " is undefined");
    check(op != ReduceKind::Mean || at::isFloatingType(tensors[i].scalar_type()), ErrorKind::DType,
          "all-reduce mean needs floating-point tensors, tensor ", i, " is ", tensors[i].scalar_type());
  }
  check(bucket_bytes > 0, ErrorKind::Argument, "bucket size must be > 0 bytes, got ", bucket_bytes);
  run("all-reduce", [&] {
    c10d::AllreduceOptions ao;
    ao.reduceOp = op == ReduceKind::Max ? c10d::ReduceOp::MAX : op == ReduceKind::Min ? c10d::ReduceOp::MIN : c10d::ReduceOp::SUM;
    auto groups = buckets(tensors, bucket_bytes);
    std::vector<std::vector<at::Tensor>> flat(groups.size());
    std::vector<c10::intrusive_ptr<c10d::Work>> work;
    for (size_t g = 0; g < groups.size(); ++g) {
      const auto& grp = groups[g];
      // One contiguous tensor goes as it is (in place, no copy); the others are packed.
      flat[g] = {grp.size() == 1 && grp[0].is_contiguous() ? grp[0] : at::flatten_dense_tensors(grp)};
      if (prescale != 1.0) flat[g][0].mul_(prescale);
      work.push_back(impl_->pg->allreduce(flat[g], ao));
    }
    for (auto& w : work) w->wait();
    for (size_t g = 0; g < groups.size(); ++g) {
      if (op == ReduceKind::Mean) flat[g][0].div_(opts_.world_size);
      if (flat[g][0].unsafeGetTensorImpl() == groups[g][0].unsafeGetTensorImpl()) continue;
      auto parts = at::unflatten_dense_tensors(flat[g][0], groups[g]);
      for (size_t i = 0; i < parts.size(); ++i) groups[g][i].copy_(parts[i]);
    }
  });
}

void ProcessGroup::broadcast(const std::vector<at::Tensor>& tensors, int root, int64_t bucket_bytes) {
  check(root >= 0 && root < opts_.world_size, ErrorKind::Argument, "broadcast root must lie in [0, ",
        opts_.world_size, "), got ", root);
  for (size_t i = 0; i < tensors.size(); ++i)
    check(tensors[i].defined(), ErrorKind::Argument, "broadcast: tensor ", i, " is undefined");
  check(bucket_bytes > 0, ErrorKind::Argument, "bucket size must be > 0 bytes, got ", bucket_bytes);
  run("broadcast", [&] {
    c10d::BroadcastOptions bo;
    bo.rootRank = root;
    auto groups = buckets(tensors, bucket_bytes);
    std::vector<std::vector<at::Tensor>> flat(groups.size());
    std::vector<c10::intrusive_ptr<c10d::Work>> work;
    for (size_t g = 0; g < groups.size(); ++g) {
      const auto& grp = groups[g];
      flat[g] = {grp.size() == 1 && grp[0].is_contiguous() ? grp[0] : at::flatten_dense_tensors(grp)};
      work.push_back(impl_->pg->broadcast(flat[g], bo));
    }
    for (auto& w : work) w->wait();
    if (opts_.rank == root) return;
    for (size_t g = 0; g < groups.size(); ++g) {
      if (flat[g][0].unsafeGetTensorImpl() == groups[g][0].unsafeGetTensorImpl()) continue;
      auto parts = at::unflatten_dense_tensors(flat[g][0], groups[g]);
      for (size_t i = 0; i < parts.size(); ++i) groups[g][i].copy_(parts[i]);
    }
  });
}

void ProcessGroup::barrier() {
  run("barrier", [&] { impl_->pg->barrier()->wait(); });
}

void ProcessGroup::close(bool abort) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
  }
  std::exception_ptr err;
  if (!abort && broken().empty()) {
    try {
      barrier();
    } catch (...) {
      err = std::current_exception();
    }
  }
  std::lock_guard<std::mutex> lk(mu_);
  closed_ = true;
  impl_->stop_heartbeat();
  impl_->pg.reset();
  impl_->default_pg.reset();
  impl_->root.reset();
  if (err) std::rethrow_exception(err);
}

bool ProcessGroup::closed() const {
  std::lock_guard<std::mutex> lk(mu_);
  return closed_;
}

std::string ProcessGroup::broken() const {
  std::lock_guard<std::mutex> lk(mu_);
  return broken_;
}

void ProcessGroup::store_set(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lk(mu_);
  check(!closed_, ErrorKind::State, "store_set on a closed process group");
  impl_->root->set("user/" + key, std::vector<uint8_t>(value.begin(), value.end()));
}

std::string ProcessGroup::store_get(const std::string& key) {
  std::lock_guard<std::mutex> lk(mu_);
  check(!closed_, ErrorKind::State, "store_get on a closed process group");
  auto v = impl_->root->get("user/" + key);
  return std::string(v.begin(), v.end());
}

}  // namespace tangent
