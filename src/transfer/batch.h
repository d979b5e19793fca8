// A batch of requests and their states. Internal to src/transfer.
//
// Thread safety: Reserve/Start run on the submitting thread (serialised by
// the engine per batch); SliceDone may be called from any transport thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "common/status.h"
#include "transfer/transfer_engine.h"

namespace crescent::transfer {

class Batch {
 public:
  explicit Batch(size_t capacity);

  // Claims `n` request slots; the first index, or RESOURCE_EXHAUSTED.
  StatusOr<size_t> Reserve(size_t n);
  // Request `index` will be finished by `slices` SliceDone calls. With
  // `crc_out`, a request that completes gets Crc32c(local, length) stored
  // there first (for transports that cannot compute it while copying).
  void Start(size_t index, uint32_t slices, uint32_t* crc_out = nullptr,
             const void* local = nullptr, uint64_t length = 0);
  // Marks `count` reserved slots starting at `first` failed before they
  // started (submission aborted).
  void FailUnstarted(size_t first, size_t count, const Status& error);
  void SliceDone(size_t index, const Status& status);

  TransferStatus Get(size_t index) const;
  size_t submitted() const { return reserved_.load(); }
  bool AllTerminal() const { return terminal_.load() == reserved_.load(); }
  Status Wait(std::chrono::milliseconds timeout) const;

 private:
  struct Request {
    std::atomic<uint32_t> slices_left{0};
    std::atomic<TransferState> state{TransferState::kPending};
    Status error;  // guarded by mu_; first failure wins
    uint32_t* crc_out = nullptr;
    const void* local = nullptr;
    uint64_t length = 0;
  };
  void Finish(size_t index);

  const size_t capacity_;
  std::unique_ptr<Request[]> requests_;
  std::atomic<size_t> reserved_{0};
  std::atomic<size_t> terminal_{0};
  mutable std::mutex mu_;
  mutable std::condition_variable done_cv_;  // signalled when terminal_ == reserved_
};

}  // namespace crescent::transfer
