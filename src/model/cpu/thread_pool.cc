#include "model/cpu/thread_pool.h"

#include <immintrin.h>

namespace crescent::model::cpu {
namespace {
// Spin iterations (each a pause, ~10-40 ns) before a worker sleeps: long
// enough to bridge the gap between the loops of one forward pass.
constexpr int kSpinIterations = 1 << 14;
// Of those, the first are busy pauses; the rest yield the core.
constexpr int kPauseIterations = 1 << 11;
// The caller's busy wait for workers to finish before it yields.
constexpr int kCallerSpinIterations = 1 << 11;
}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks(int thread_index) {
  while (true) {
    int64_t begin = next_.fetch_add(job_grain_, std::memory_order_relaxed);
    if (begin >= job_n_) break;
    int64_t end = std::min(job_n_, begin + job_grain_);
    (*job_)(begin, end, thread_index);
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (workers_.empty() || n <= grain) {
    for (int64_t b = 0; b < n; b += grain) fn(b, std::min(n, b + grain), 0);
    return;
  }
  job_ = &fn;
  job_n_ = n;
  job_grain_ = grain;
  next_.store(0, std::memory_order_relaxed);
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  RunChunks(0);
  // A worker that the OS has descheduled (2 cores shared with other work)
  // must get the CPU back to check in: yield rather than spin for long.
  for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
    if (spin < kCallerSpinIterations) {
      _mm_pause();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::WorkerLoop(int index) {
  // Flush denormals to zero: softmax tails (probabilities below 1e-38)
  // times values would otherwise take the slow microcode path.
  _mm_setcsr(_mm_getcsr() | kFlushDenormals);
  uint64_t seen = 0;
  while (true) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < kSpinIterations; ++spin) {
      if (spin < kPauseIterations) {
        _mm_pause();
      } else {
        std::this_thread::yield();  // let the caller run if it shares our core
      }
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load() != seen; });
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (stop_.load()) return;
    RunChunks(index);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace crescent::model::cpu
