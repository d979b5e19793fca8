// The part every MetadataStore backend shares: the entries this client
// wrote, kept alive in the background and published again when the
// server lost them (lease expired during a partition, server restarted).
// Internal to the metadata backends.
//
// A backend implements the Backend* hooks and Refresh(); it calls
// StartRefresher() at the end of its constructor and StopRefresher() at the
// start of its destructor (before its own members go away).
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include "transfer/metadata/metadata.h"

namespace crescent::transfer {

class LeasedStore : public MetadataStore {
 public:
  Status Put(std::string_view key, std::string_view value) override;
  StatusOr<std::string> Get(std::string_view key) override;
  Status Delete(std::string_view key) override;
  StatusOr<std::vector<std::pair<std::string, std::string>>> List(std::string_view prefix) override;

 protected:
  using Owned = std::map<std::string, std::string, std::less<>>;

  explicit LeasedStore(MetadataOptions options) : options_(std::move(options)) {}

  // Writes `key`; bound to this client's lease when options().leased.
  virtual Status BackendPut(std::string_view key, std::string_view value) = 0;
  virtual StatusOr<std::string> BackendGet(std::string_view key) = 0;
  virtual Status BackendDelete(std::string_view key) = 0;
  virtual StatusOr<std::vector<std::pair<std::string, std::string>>> BackendList(
      std::string_view prefix) = 0;
  // Keeps `owned` alive for another ttl. Runs on the refresher thread every
  // ttl/3, with no Put or Delete in progress. When the server lost them
  // (lease expired, server restarted) it re-creates the lease and writes
  // them again. An error is logged and retried at the next tick.
  virtual Status Refresh(const Owned& owned) = 0;

  const MetadataOptions& options() const { return options_; }
  // A copy of the entries this client wrote (and did not delete).
  Owned SnapshotOwned();
  void StartRefresher();
  void StopRefresher();

 private:
  void RefreshLoop();

  const MetadataOptions options_;

  // Puts hold publish_mu_ shared; Refresh holds it exclusive so that a
  // republish never writes a value older than a concurrent Put's.
  std::shared_mutex publish_mu_;
  std::mutex owned_mu_;
  Owned owned_;  // guarded by owned_mu_; entries written by this client

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;  // guarded by stop_mu_
  std::thread refresher_;
};

}  // namespace crescent::transfer
