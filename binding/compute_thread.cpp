// The compute thread (see compute_thread.h).
#include "compute_thread.h"

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

namespace tangent_js {
namespace {

struct Job {
  const std::function<void()>* work;
  std::exception_ptr error;
  bool done = false;
};

class ComputeThread {
 public:
  ComputeThread() : thread_([this] { Loop(); }) { thread_.detach(); }

  void Run(const std::function<void()>& work) {
    Job job{&work, nullptr, false};
    {
      std::lock_guard<std::mutex> lk(mu_);
      queue_.push_back(&job);
    }
    cv_.notify_all();
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return job.done; });
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  void Loop() {
    for (;;) {
      Job* job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return !queue_.empty(); });
        job = queue_.front();
        queue_.pop_front();
      }
      try {
        (*job->work)();
      } catch (...) {
        job->error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lk(mu_);
        job->done = true;
      }
      done_cv_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::deque<Job*> queue_;
  std::thread thread_;
};

bool Enabled() {
  const char* v = std::getenv("TANGENT_COMPUTE_THREAD");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

}  // namespace

void RunOnComputeThread(const std::function<void()>& work) {
  static const bool enabled = Enabled();
  if (!enabled) return work();
  // Process-wide and never destroyed: worker_threads' environments share it, and it outlives
  // every environment's teardown (a detached thread blocked on its queue at exit).
  static ComputeThread* const thread = new ComputeThread();
  thread->Run(work);
}

}  // namespace tangent_js
