#include "store/master_bench.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <thread>

#include "store/master_client.h"

namespace crescent::store {
namespace {

// The operations the bench needs, over either target.
class Target {
 public:
  virtual ~Target() = default;
  virtual Status Put(const std::string& key, uint64_t size) = 0;
  virtual Status Get(const std::string& key) = 0;
  virtual Status Exist(const std::string& key) = 0;
  virtual Status BatchPut(const std::vector<std::string>& keys, uint64_t size) = 0;
  virtual Status BatchGet(const std::vector<std::string>& keys) = 0;
  virtual Status BatchExist(const std::vector<std::string>& keys) = 0;
};

template <typename Api>
class ApiTarget : public Target {
 public:
  explicit ApiTarget(Api* api) : api_(api) {}
  Status Put(const std::string& key, uint64_t size) override {
    RETURN_IF_ERROR(Check(api_->PutStart(PutStartArgs{key, size, 1, false, ""})));
    return api_->PutEnd(key, 1);
  }
  Status Get(const std::string& key) override { return Check(api_->GetReplicaList(key)); }
  Status Exist(const std::string& key) override { return Check(api_->Exist(key)); }
  Status BatchPut(const std::vector<std::string>& keys, uint64_t size) override {
    std::vector<PutStartArgs> items;
    for (const auto& k : keys) items.push_back(PutStartArgs{k, size, 1, false, ""});
    RETURN_IF_ERROR(All(api_->BatchPutStart(items)));
    return All(api_->BatchPutEnd(keys, std::vector<uint32_t>(keys.size(), 1)));
  }
  Status BatchGet(const std::vector<std::string>& keys) override {
    return All(api_->BatchGetReplicaList(keys));
  }
  Status BatchExist(const std::vector<std::string>& keys) override {
    return All(api_->BatchExist(keys));
  }

 private:
  template <typename T>
  static Status Check(const StatusOr<T>& r) { return r.status(); }
  static Status Check(const Status& s) { return s; }
  template <typename V>
  static Status AllOf(const V& items) {
    for (const auto& i : items) RETURN_IF_ERROR(Check(i));
    return OkStatus();
  }
  // MasterCore returns the vector; MasterClient wraps it in StatusOr.
  template <typename T>
  static Status All(const std::vector<T>& items) { return AllOf(items); }
  template <typename T>
  static Status All(const StatusOr<std::vector<T>>& items) {
    RETURN_IF_ERROR(items.status());
    return AllOf(*items);
  }
  Api* api_;
};

}  // namespace

StatusOr<std::vector<MasterBenchResult>> RunMasterBench(const MasterBenchOptions& o) {
  std::unique_ptr<MasterCore> core;
  std::vector<std::unique_ptr<MasterClient>> clients;
  std::vector<std::unique_ptr<Target>> targets;
  const uint64_t total_keys = o.keys_per_thread * 2 * o.threads;
  const SegmentSpec seg{"bench-segment", 0, total_keys * o.value_size * 2};
  const std::string client_id = "store-bench";
  if (o.master_address.empty()) {
    core = MasterCore::Create(MasterOptions{});
    RETURN_IF_ERROR(core->MountSegment(client_id, seg).status());
    for (int t = 0; t < o.threads; ++t) targets.push_back(std::make_unique<ApiTarget<MasterCore>>(core.get()));
  } else {
    for (int t = 0; t < o.threads; ++t) {
      // One channel (one connection) per thread, as separate clients have.
      clients.push_back(MasterClient::Create(o.master_address,
                                            MasterClientOptions{.use_fast_port = o.use_fast_port},
                                            true));
      targets.push_back(std::make_unique<ApiTarget<MasterClient>>(clients.back().get()));
    }
    RETURN_IF_ERROR(clients[0]->MountSegment(client_id, seg).status());
  }

  // Heartbeats, so that a long run does not expire the bench's segment.
  std::atomic<bool> done{false};
  std::thread pinger([&] {
    while (!done) {
      if (core) core->Ping(client_id); else clients[0]->Ping(client_id).status().IgnoreError();
      for (int i = 0; i < 10 && !done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  struct Joiner {
    std::atomic<bool>& done;
    std::thread& t;
    ~Joiner() { done = true; t.join(); }
  } joiner{done, pinger};
  auto key_of = [](int t, uint64_t i, bool batched) {
    return std::string(batched ? "bench/b/" : "bench/s/") + std::to_string(t) + "/" +
           std::to_string(i);
  };
  std::vector<MasterBenchResult> results;
  // Runs fn(thread, index) over keys_per_thread indices per thread, in steps
  // of `step` (1, or the batch size).
  auto phase = [&](const std::string& name, uint64_t step,
                   std::function<Status(int, uint64_t)> fn) -> Status {
    std::atomic<bool> failed{false};
    Status first_error;
    std::mutex mu;
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < o.threads; ++t) {
      threads.emplace_back([&, t] {
        for (uint64_t i = 0; i < o.keys_per_thread && !failed; i += step) {
          Status s = fn(t, i);
          if (!s.ok()) {
            std::lock_guard lock(mu);
            if (!failed.exchange(true)) first_error = s.WithContext(name);
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    if (failed) return first_error;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double objects = double(o.keys_per_thread) * o.threads;
    results.push_back({name, objects / secs, objects / double(step) / secs});
    return OkStatus();
  };
  const uint64_t b = static_cast<uint64_t>(o.batch);
  auto batch_keys = [&](int t, uint64_t i) {
    std::vector<std::string> keys;
    for (uint64_t j = i; j < i + b && j < o.keys_per_thread; ++j) keys.push_back(key_of(t, j, true));
    return keys;
  };
  RETURN_IF_ERROR(phase("put", 1, [&](int t, uint64_t i) {
    return targets[t]->Put(key_of(t, i, false), o.value_size);
  }));
  RETURN_IF_ERROR(phase("get", 1, [&](int t, uint64_t i) { return targets[t]->Get(key_of(t, i, false)); }));
  RETURN_IF_ERROR(phase("exist", 1, [&](int t, uint64_t i) { return targets[t]->Exist(key_of(t, i, false)); }));
  RETURN_IF_ERROR(phase("batch_put", b, [&](int t, uint64_t i) {
    return targets[t]->BatchPut(batch_keys(t, i), o.value_size);
  }));
  RETURN_IF_ERROR(phase("batch_get", b, [&](int t, uint64_t i) { return targets[t]->BatchGet(batch_keys(t, i)); }));
  RETURN_IF_ERROR(phase("batch_exist", b, [&](int t, uint64_t i) { return targets[t]->BatchExist(batch_keys(t, i)); }));
  // Leave the master as we found it (leases of the gets block RemoveAll,
  // so the segment goes instead: that drops every copy in it).
  if (core) {
    RETURN_IF_ERROR(core->UnmountSegment(client_id, seg.name, seg.base));
  } else {
    RETURN_IF_ERROR(clients[0]->UnmountSegment(client_id, seg.name, seg.base));
  }
  return results;
}

}  // namespace crescent::store
