// A small persistent thread pool for the CPU backend's parallel loops.
//
// ParallelFor splits [0, n) into chunks handed out dynamically to the
// workers and the calling thread. Workers spin briefly between jobs (a
// decode step issues hundreds of short parallel loops; waking a sleeping
// thread for each would cost more than the loop), then sleep on a
// condition variable.
//
// Thread safety: one ParallelFor at a time (the backend serialises
// Forward); the callback runs concurrently on up to num_threads() threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace crescent::model::cpu {

// MXCSR bits FTZ (flush-to-zero) and DAZ (denormals-are-zero). Workers run
// with them set; callers of a forward pass set them for its duration.
inline constexpr unsigned kFlushDenormals = 0x8040;

class ThreadPool {
 public:
  // num_threads includes the caller; 1 means no worker threads.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end, thread_index) over disjoint chunks covering [0, n),
  // each at most `grain` long; returns when all are done.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn);

 private:
  void WorkerLoop(int index);
  void RunChunks(int thread_index);

  std::vector<std::thread> workers_;
  // The current job; written by the caller before bumping generation_.
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_grain_ = 1;
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};  // workers still inside the current job
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace crescent::model::cpu
