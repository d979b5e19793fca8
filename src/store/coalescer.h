// Coalescer: turns concurrent calls into batch RPCs (group commit).
//
// Each caller submits its items and blocks. While fewer than
// `max_in_flight` flushes run, a caller becomes a leader: it takes every
// queued submission (up to `max_items` items), runs one flush (a batch RPC)
// for all of them and hands each caller its results. With one caller this
// is one RPC per call, as before; with 32 callers an RPC carries many items,
// so the master's per-RPC cost is paid once per batch (the master's batch
// forms serve >100k items/s where single RPCs manage about 10k).
//
// Thread safety: Submit may be called from any number of threads.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

namespace crescent::store {

template <typename Item, typename Result>
class Coalescer {
 public:
  // flush(items) returns one result per item, in order.
  using Flush = std::function<std::vector<Result>(const std::vector<Item>&)>;

  Coalescer(Flush flush, size_t max_items, int max_in_flight)
      : flush_(std::move(flush)), max_items_(max_items), max_in_flight_(max_in_flight) {}

  std::vector<Result> Submit(std::vector<Item> items) {
    Request req{std::move(items), {}, false};
    std::unique_lock lock(mu_);
    queue_.push_back(&req);
    for (;;) {
      if (req.done) return std::move(req.results);
      if (in_flight_ < max_in_flight_ && !queue_.empty() && queue_.front() == &req) break;
      cv_.wait(lock);
    }
    // Leader: take a group starting with our own request.
    std::vector<Request*> group;
    std::vector<Item> all;
    size_t n = 0;
    while (!queue_.empty() && (group.empty() || n + queue_.front()->items.size() <= max_items_)) {
      Request* r = queue_.front();
      queue_.pop_front();
      n += r->items.size();
      group.push_back(r);
    }
    ++in_flight_;
    lock.unlock();
    all.reserve(n);
    for (Request* r : group) {
      for (auto& it : r->items) all.push_back(std::move(it));
    }
    std::vector<Result> results = flush_(all);
    lock.lock();
    size_t k = 0;
    for (Request* r : group) {
      r->results.reserve(r->items.size());
      for (size_t i = 0; i < r->items.size(); ++i) r->results.push_back(std::move(results[k++]));
      r->done = true;
    }
    --in_flight_;
    cv_.notify_all();
    return std::move(req.results);
  }

 private:
  struct Request {
    std::vector<Item> items;
    std::vector<Result> results;
    bool done;
  };

  const Flush flush_;
  const size_t max_items_;
  const int max_in_flight_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request*> queue_;  // guarded by mu_
  int in_flight_ = 0;           // guarded by mu_
};

}  // namespace crescent::store
