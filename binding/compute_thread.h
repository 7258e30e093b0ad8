// One thread for every heavy call's libtorch work. Each Task still runs as a libuv AsyncWorker
// (Promise, OnOK/OnError on the JS thread), but its Execute hands the work to this thread and waits.
//
// Why: libgomp (the OpenMP of PyTorch's wheels, which MKL's gemm and ATen's parallel_for run on)
// keeps one thread team per calling thread. Work spread over libuv's four pool threads makes four
// teams; once libgomp manages more threads than there are CPUs it stops spin-waiting between
// parallel regions and parks its threads on a futex, and each of the thousands of small regions of
// a ViT step then pays a wake-up: measured on 2 cores with torch 2.13, the built-in ViT's forward
// took 440 ms from a second thread against 106 ms from one (perf: futex wake-ups in GOMP_parallel).
// With one compute thread there is one team, as in a PyTorch script.
//
// Calls therefore run one at a time, in the order they were queued (they are CPU-bound on the same
// cores anyway). Process-group collectives (binding/distributed.cpp) stay on the pool: they wait on
// other ranks, and a rank's collective must not wait behind this process's compute.
// TANGENT_COMPUTE_THREAD=0 runs the work on the pool thread itself, as before.
#pragma once

#include <functional>

namespace tangent_js {

// Runs `work` on the compute thread and returns when it has finished; an exception it throws is
// rethrown here.
void RunOnComputeThread(const std::function<void()>& work);

}  // namespace tangent_js
