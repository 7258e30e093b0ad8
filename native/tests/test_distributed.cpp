// Plain C++ tests of native/distributed: two ranks as two threads of this process over a TCPStore
// on 127.0.0.1 (Gloo). Bucketed all-reduce (sum, mean, mixed dtypes, non-contiguous), broadcast,
// barrier, and the failures: a rank that never joins, rank 0 missing, a peer that leaves mid-run.
// Usage: tangent_distributed_tests. Ends with "N passed, N failed".
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <string>
#include <thread>

#include "distributed.h"

using namespace tangent;
using ms = std::chrono::milliseconds;

static int passed = 0, failed = 0;

static void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok" : "not ok", what.c_str());
  std::fflush(stdout);
  (ok ? passed : failed)++;
}

static bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A port the kernel just handed out (closed again; a small race other tests live with too).
static int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

static ProcessGroupOptions opts(int port, int rank, int world, ms timeout) {
  ProcessGroupOptions o;
  o.master_addr = "127.0.0.1";
  o.port = port;
  o.rank = rank;
  o.world_size = world;
  o.timeout = timeout;
  return o;
}

// Runs body(rank, group) on two threads joined into one group; returns each thread's error ("" if none).
static std::vector<std::string> two_ranks(ms timeout, const std::function<void(int, ProcessGroup&)>& body) {
  const int port = free_port();
  std::vector<std::string> errs(2);
  std::vector<std::thread> th;
  for (int r = 0; r < 2; ++r)
    th.emplace_back([&, r] {
      try {
        auto pg = ProcessGroup::create(opts(port, r, 2, timeout));
        body(r, *pg);
      } catch (const std::exception& e) {
        errs[r] = e.what();
      }
    });
  for (auto& t : th) t.join();
  return errs;
}

int main() {
  std::printf("# distributed backends: gloo %d, nccl %d\n", distributed_backend_available("gloo"),
              distributed_backend_available("nccl"));

  // Collectives: values checked on both ranks.
  {
    std::vector<bool> ok(2, false), mean_ok(2, false), bcast_ok(2, false), big_ok(2, false), leaf_ok(2, false);
    auto errs = two_ranks(ms(20000), [&](int r, ProcessGroup& pg) {
      const double k = r + 1;  // rank 0 holds 1s, rank 1 holds 2s
      // Four tensors, two dtypes, one non-contiguous, 64-byte buckets: several buckets in flight.
      std::vector<at::Tensor> ts = {at::full({3, 4}, k, at::kFloat), at::full({5}, 10 * k, at::kDouble),
                                    at::full({4, 3}, k, at::kFloat).t(), at::arange(7, at::kFloat) * k};
      pg.all_reduce(ts, ReduceKind::Sum, 64);
      ok[r] = at::equal(ts[0], at::full({3, 4}, 3.0f)) && at::equal(ts[1], at::full({5}, 30.0, at::kDouble)) &&
              at::equal(ts[2], at::full({3, 4}, 3.0f)) && at::equal(ts[3], at::arange(7, at::kFloat) * 3);
      std::vector<at::Tensor> m = {at::full({6}, k, at::kFloat)};
      pg.all_reduce(m, ReduceKind::Mean);
      mean_ok[r] = at::equal(m[0], at::full({6}, 1.5f));
      std::vector<at::Tensor> b = {at::full({2, 2}, k, at::kFloat), at::full({3}, 100 * k, at::kLong)};
      pg.broadcast(b, 1, 8);
      bcast_ok[r] = at::equal(b[0], at::full({2, 2}, 2.0f)) && at::equal(b[1], at::full({3}, 200, at::kLong));
      pg.barrier();
      // Leaves that require grad (as TorchScript parameters are) are written in place all the same.
      std::vector<at::Tensor> leaf = {at::full({3}, k, at::kFloat).requires_grad_(true), at::full({2}, k, at::kFloat).requires_grad_(true)};
      pg.broadcast(leaf, 0);
      pg.all_reduce(leaf, ReduceKind::Sum);
      leaf_ok[r] = at::equal(leaf[0].detach(), at::full({3}, 2.0f)) && at::equal(leaf[1].detach(), at::full({2}, 2.0f));
      std::vector<at::Tensor> big = {at::full({1 << 20}, k, at::kFloat)};
      pg.all_reduce(big, ReduceKind::Sum);
      big_ok[r] = big[0].eq(3.0f).all().item<bool>();
      pg.close();
    });
    expect(errs[0].empty() && errs[1].empty(), "two ranks join and run collectives without error" +
                                                   (errs[0].empty() ? std::string() : " [" + errs[0] + "]") +
                                                   (errs[1].empty() ? std::string() : " [" + errs[1] + "]"));
    expect(ok[0] && ok[1], "bucketed all-reduce sum: mixed dtypes, non-contiguous, exact on both ranks");
    expect(mean_ok[0] && mean_ok[1], "all-reduce mean = sum / world size");
    expect(bcast_ok[0] && bcast_ok[1], "broadcast from rank 1 reaches rank 0, both dtypes");
    expect(big_ok[0] && big_ok[1], "1M-float all-reduce is exact");
    expect(leaf_ok[0] && leaf_ok[1], "leaves that require grad are broadcast and reduced in place");
  }

  // Three ranks (a ring of three); then two of three missing are both named.
  {
    const int port = free_port();
    std::vector<bool> ok(3, false);
    std::vector<std::thread> th;
    for (int r = 0; r < 3; ++r)
      th.emplace_back([&, r] {
        try {
          auto pg = ProcessGroup::create(opts(port, r, 3, ms(20000)));
          std::vector<at::Tensor> t = {at::full({1000}, double(r + 1), at::kDouble)};
          pg->all_reduce(t, ReduceKind::Sum, 1024);
          ok[r] = at::equal(t[0], at::full({1000}, 6.0, at::kDouble));
          pg->close();
        } catch (const std::exception& e) {
          std::printf("# rank %d: %s\n", r, e.what());
        }
      });
    for (auto& t : th) t.join();
    expect(ok[0] && ok[1] && ok[2], "three ranks: all-reduce in 1 KiB buckets sums 1 + 2 + 3 on every rank");
    std::string err;
    try {
      ProcessGroup::create(opts(free_port(), 0, 3, ms(1000)));
    } catch (const DistributedError& e) {
      err = e.what();
    }
    expect(has(err, "ranks 1, 2 did not join"), "two missing ranks are both named: " + err);
  }

  // A rank that never joins: rank 0 alone, 1 s timeout.
  {
    const auto t0 = std::chrono::steady_clock::now();
    std::string err;
    try {
      ProcessGroup::create(opts(free_port(), 0, 2, ms(1000)));
    } catch (const DistributedError& e) {
      err = e.what();
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    expect(has(err, "rank 1 did not join") && has(err, "1 s"), "missing rank 1 is named, with the timeout: " + err);
    expect(s < 5, "missing rank reported within the timeout (" + std::to_string(s) + " s)");
  }

  // Rank 0 (the store's host) never starts: rank 1 alone.
  {
    std::string err;
    try {
      ProcessGroup::create(opts(free_port(), 1, 2, ms(1000)));
    } catch (const DistributedError& e) {
      err = e.what();
    }
    expect(has(err, "rank 0 did not answer") && has(err, "1 s"), "missing rank 0 is named: " + err);
  }

  // A peer that leaves mid-run: rank 1 aborts after one all-reduce; rank 0's next one fails naming it,
  // and the broken group refuses further work.
  {
    std::string second;
    auto errs = two_ranks(ms(5000), [&](int r, ProcessGroup& pg) {
      std::vector<at::Tensor> t = {at::ones({16})};
      pg.all_reduce(t, ReduceKind::Sum);
      if (r == 1) {
        pg.close(/*abort=*/true);
        return;
      }
      std::this_thread::sleep_for(ms(300));
      const auto t0 = std::chrono::steady_clock::now();
      try {
        pg.all_reduce(t, ReduceKind::Sum);
      } catch (const DistributedError& e) {
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        try {
          pg.barrier();
        } catch (const DistributedError& e2) {
          second = e2.what();
        }
        throw DistributedError(std::string(e.what()) + " [after " + std::to_string(s) + " s]");
      }
    });
    expect(has(errs[0], "rank 1 stopped") && has(errs[0], "timeout 5 s"),
           "a peer that left is named, with the timeout: " + errs[0]);
    expect(errs[1].empty(), "the leaving rank itself saw no error");
    expect(has(second, "unusable after an earlier failure"), "a broken group refuses further collectives");
  }

  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
