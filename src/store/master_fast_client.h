// FastChannel: the client side of the master's fast port (fast_wire.h).
//
// A pool of plain TCP connections; a call takes an idle one (or opens
// one), sends its request and reads the reply on the calling thread, so a
// call costs one loopback round trip and no thread hand-off. Idle
// connections the master has closed (it restarted) are noticed before use
// and replaced.
//
// MasterClient owns one and falls back to gRPC when the master has no fast
// port or it cannot be reached (master_client.cc).
//
// Thread safety: every method may be called concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/master.h"

namespace crescent::store {

class FastChannel {
 public:
  // `unix_name`: the master's abstract unix socket, tried first (it exists
  // only on the master's host); "" for TCP only.
  FastChannel(std::string host, uint16_t port, std::chrono::milliseconds timeout,
              std::string unix_name = "");
  ~FastChannel();
  FastChannel(const FastChannel&) = delete;
  FastChannel& operator=(const FastChannel&) = delete;

  // The typed calls mirror MasterCore's; the outer result is the call's:
  // UNAVAILABLE when the master cannot be reached or does not answer in
  // time. Then *reached (when given) says whether the request may have
  // reached the master (a retry elsewhere could repeat it); false means
  // nothing was sent (no connection could be made).
  StatusOr<std::vector<StatusOr<std::vector<Replica>>>> BatchPutStart(
      const std::vector<PutStartArgs>& items, bool* reached = nullptr);
  StatusOr<std::vector<Status>> BatchPutEnd(const std::vector<std::string>& keys,
                                            const std::vector<uint32_t>& crcs,
                                            bool* reached = nullptr);
  StatusOr<std::vector<Status>> BatchPutRevoke(const std::vector<std::string>& keys,
                                               bool* reached = nullptr);
  StatusOr<std::vector<Status>> BatchRemove(const std::vector<std::string>& keys,
                                            bool* reached = nullptr);
  StatusOr<std::vector<StatusOr<ObjectInfo>>> BatchGetReplicaList(
      const std::vector<std::string>& keys, bool* reached = nullptr);
  StatusOr<std::vector<StatusOr<bool>>> BatchExist(const std::vector<std::string>& keys,
                                                    bool* reached = nullptr);
  StatusOr<Reservation> Reserve(const std::string& client_id, uint64_t size, uint64_t min_size,
                                const std::string& preferred_segment, bool* reached = nullptr);
  StatusOr<std::vector<Status>> BatchCommit(const std::vector<CommitArgs>& items,
                                            bool* reached = nullptr);
  Status Release(uint64_t reservation, bool* reached = nullptr);

  // Sends one request and returns the reply body (after the call-level
  // status). On failure, *reached says whether the request may have been
  // delivered.
  StatusOr<std::string> Call(uint8_t method, const std::string& body, bool* reached);

  const std::string& address() const;

 private:
  StatusOr<std::string> CallOnce(uint8_t method, const std::string& body, bool* reached,
                                 bool* fresh);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace crescent::store
