#include "transfer/metadata/leased_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace crescent::transfer {

Status LeasedStore::Put(std::string_view key, std::string_view value) {
  std::shared_lock publish(publish_mu_);
  RETURN_IF_ERROR(BackendPut(key, value));
  if (options_.leased) {
    std::lock_guard lock(owned_mu_);
    owned_.insert_or_assign(std::string(key), std::string(value));
  }
  return OkStatus();
}

StatusOr<std::string> LeasedStore::Get(std::string_view key) { return BackendGet(key); }

Status LeasedStore::Delete(std::string_view key) {
  std::shared_lock publish(publish_mu_);
  {
    std::lock_guard lock(owned_mu_);
    if (auto it = owned_.find(key); it != owned_.end()) owned_.erase(it);
  }
  return BackendDelete(key);
}

StatusOr<std::vector<std::pair<std::string, std::string>>> LeasedStore::List(std::string_view prefix) {
  ASSIGN_OR_RETURN(auto kvs, BackendList(prefix));
  std::sort(kvs.begin(), kvs.end());
  return kvs;
}

LeasedStore::Owned LeasedStore::SnapshotOwned() {
  std::lock_guard lock(owned_mu_);
  return owned_;
}

void LeasedStore::StartRefresher() {
  if (!options_.leased) return;
  refresher_ = std::thread([this] { RefreshLoop(); });
}

void LeasedStore::StopRefresher() {
  {
    std::lock_guard lock(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (refresher_.joinable()) refresher_.join();
}

void LeasedStore::RefreshLoop() {
  const auto period = std::max(options_.ttl / 3, std::chrono::milliseconds(10));
  bool failing = false;
  for (;;) {
    {
      std::unique_lock lock(stop_mu_);
      if (stop_cv_.wait_for(lock, period, [this] { return stop_; })) return;
    }
    std::unique_lock publish(publish_mu_);
    Status st;
    try {
      st = Refresh(SnapshotOwned());
    } catch (const std::exception& e) {  // a malformed reply must not end the process
      st = InternalError(std::string("refresh failed: ") + e.what());
    }
    if (!st.ok() && !failing) {
      spdlog::warn("metadata {}: keeping entries alive failed (will retry every {} ms): {}",
                   Describe(), period.count(), st.ToString());
    } else if (st.ok() && failing) {
      spdlog::info("metadata {}: entries kept alive again", Describe());
    }
    failing = !st.ok();
  }
}

}  // namespace crescent::transfer
