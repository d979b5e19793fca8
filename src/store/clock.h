// Clock: the master logic's only source of time, injectable for tests.
//
// Thread safety: NowMicros may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>

namespace crescent::store {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic microseconds since an arbitrary epoch.
  virtual int64_t NowMicros() const = 0;
};

// std::chrono::steady_clock. Lives for the whole process.
Clock* SystemClock();

// A clock that only moves when told to (tests).
class ManualClock : public Clock {
 public:
  explicit ManualClock(int64_t start_us = 1'000'000) : now_us_(start_us) {}
  int64_t NowMicros() const override { return now_us_.load(); }
  void AdvanceMs(int64_t ms) { now_us_ += ms * 1000; }

 private:
  std::atomic<int64_t> now_us_;
};

}  // namespace crescent::store
