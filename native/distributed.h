// Process groups over libtorch's own torch.distributed c10d: TCPStore rendezvous, Gloo on CPU,
// NCCL when the libtorch was built with it. The c10d types stay inside src/distributed.cpp.
//
// Rendezvous lays the store out as PyTorch's init_process_group('gloo', 'tcp://...') does
// (PrefixStore "default_pg" then "0", its store-based barrier, the group's sequence number), so a
// PyTorch rank can join a tangent-edit job. Every wait is bounded by `timeout`; a rank that never
// joins, dies or freezes makes the others throw a DistributedError naming it.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common.h"

namespace tangent {

// Raised for rendezvous and collective failures; the message names the rank(s), the address and
// the timeout. After one, the group is unusable: create a new one with a fresh store (port).
struct DistributedError : public std::runtime_error {
  explicit DistributedError(const std::string& msg) : std::runtime_error(msg) {}
};

struct ProcessGroupOptions {
  std::string master_addr = "127.0.0.1";
  int port = 29500;       // rank 0 listens here; 0 lets it pick a free port (read it back: port())
  int world_size = 1;
  int rank = 0;
  std::chrono::milliseconds timeout{120000};  // store connect/join, group creation and each collective
  std::string backend = "gloo";               // "gloo" or "nccl"
  // Gloo device: the network interface (GLOO_SOCKET_IFNAME when empty) or the address to bind;
  // when both are empty, the local address that routes to master_addr.
  std::string interface;
  std::string bind_address;
  int gloo_threads = 2;
  // Liveness beacons in the store, read to name a dead or frozen peer after a failure.
  std::chrono::milliseconds heartbeat{250};
};

enum class ReduceKind { Sum, Mean, Max, Min };

class ProcessGroup {
 public:
  // Joins the group: connects to (rank 0: hosts) the store, builds the backend, waits for every
  // rank. Throws DistributedError naming the ranks that did not join within the timeout.
  static std::shared_ptr<ProcessGroup> create(const ProcessGroupOptions& o);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return opts_.rank; }
  int world_size() const { return opts_.world_size; }
  int port() const { return port_; }
  const std::string& backend() const { return opts_.backend; }
  const ProcessGroupOptions& options() const { return opts_; }

  // In place over every tensor. Tensors are packed into buckets of at most `bucket_bytes` (one
  // dtype and device per bucket, in order), all buckets are in flight at once, then unpacked.
  // Mean is a sum divided by the world size (Gloo has no AVG). `prescale` multiplies each rank's
  // values first (a weighted sum: data-parallel gradients over shards of unequal size).
  void all_reduce(const std::vector<at::Tensor>& tensors, ReduceKind op, int64_t bucket_bytes = 25 << 20,
                  double prescale = 1.0);
  // In place: every rank receives root's values.
  void broadcast(const std::vector<at::Tensor>& tensors, int root, int64_t bucket_bytes = 25 << 20);
  void barrier();
  // Leaves the group (a barrier first unless `abort`); later calls throw. Safe to call twice.
  void close(bool abort = false);
  bool closed() const;
  // Whether an earlier failure broke the group (its message, else "").
  std::string broken() const;

  // Store primitives for the tests and the launcher's bookkeeping.
  void store_set(const std::string& key, const std::string& value);
  std::string store_get(const std::string& key);

  struct Impl;

 private:
  explicit ProcessGroup(const ProcessGroupOptions& o);
  // Runs a collective under the group's lock; turns any failure into a DistributedError that
  // names the peers that stopped (from their heartbeats) and the timeout, and marks the group broken.
  template <typename F>
  void run(const char* what, F&& body);
  std::string diagnose();

  ProcessGroupOptions opts_;
  int port_ = 0;
  std::unique_ptr<Impl> impl_;
  mutable std::mutex mu_;
  std::string broken_;
  bool closed_ = false;
};

// Whether this build has the backend ("gloo" / "nccl").
bool distributed_backend_available(const std::string& backend);

}  // namespace tangent
