#include "transfer/batch.h"

#include "common/crc32c.h"
#include "fmt/format.h"
#include "transfer/transport.h"

namespace crescent::transfer {

void Slice::Complete(const Status& status) const { batch->SliceDone(request_index, status); }

Batch::Batch(size_t capacity) : capacity_(capacity), requests_(new Request[capacity]) {}

StatusOr<size_t> Batch::Reserve(size_t n) {
  size_t first = reserved_.load();
  if (n > capacity_ - first)
    return ResourceExhaustedError(fmt::format(
        "batch holds {} requests, {} already submitted, {} more do not fit; allocate a larger "
        "batch",
        capacity_, first, n));
  std::lock_guard lock(mu_);  // pairs with Wait's predicate
  reserved_.store(first + n);
  return first;
}

void Batch::Start(size_t index, uint32_t slices, uint32_t* crc_out, const void* local,
                  uint64_t length) {
  Request& r = requests_[index];
  r.crc_out = crc_out;
  r.local = local;
  r.length = length;
  r.slices_left.store(slices, std::memory_order_relaxed);
}

void Batch::FailUnstarted(size_t first, size_t count, const Status& error) {
  for (size_t i = first; i < first + count; ++i) {
    requests_[i].slices_left.store(1, std::memory_order_relaxed);
    SliceDone(i, error);
  }
}

void Batch::SliceDone(size_t index, const Status& status) {
  Request& r = requests_[index];
  if (!status.ok()) {
    std::lock_guard lock(mu_);
    if (r.error.ok()) r.error = status;
  }
  if (r.slices_left.fetch_sub(1, std::memory_order_acq_rel) == 1) Finish(index);
}

void Batch::Finish(size_t index) {
  Request& r = requests_[index];
  TransferState state = TransferState::kCompleted;
  if (r.crc_out != nullptr) {
    // Every slice is done: the local bytes are final. The state's release
    // store below publishes the value to whoever sees the request complete.
    *r.crc_out = Crc32c(r.local, r.length);
  }
  {
    std::lock_guard lock(mu_);
    if (!r.error.ok())
      state = r.error.code() == StatusCode::kDeadlineExceeded ? TransferState::kTimeout
                                                              : TransferState::kFailed;
    r.state.store(state, std::memory_order_release);
    if (terminal_.fetch_add(1) + 1 == reserved_.load()) done_cv_.notify_all();
  }
}

TransferStatus Batch::Get(size_t index) const {
  TransferStatus out;
  out.state = requests_[index].state.load(std::memory_order_acquire);
  if (out.state == TransferState::kFailed || out.state == TransferState::kTimeout) {
    std::lock_guard lock(mu_);
    out.error = requests_[index].error;
  }
  return out;
}

Status Batch::Wait(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mu_);
  if (!done_cv_.wait_for(lock, timeout, [&] { return terminal_.load() == reserved_.load(); }))
    return DeadlineExceededError(fmt::format(
        "batch: {} of {} requests still pending after {} ms", reserved_.load() - terminal_.load(),
        reserved_.load(), timeout.count()));
  size_t n = reserved_.load();
  for (size_t i = 0; i < n; ++i)
    if (!requests_[i].error.ok())
      return requests_[i].error.WithContext(fmt::format("request {}", i));
  return OkStatus();
}

}  // namespace crescent::transfer
