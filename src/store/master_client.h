// MasterClient: the Master RPCs of proto/master.proto as plain calls.
//
// Mirrors MasterCore (master.h) method for method; what each returns is
// documented there. On top of those outcomes every call may fail with
// UNAVAILABLE "master at H:P unreachable: ..." (also when it does not
// answer within rpc_timeout) when the master cannot be reached: the one
// place gRPC errors become Status.
//
// The hot calls (puts, gets, exists, removes, reservations) go over the
// master's fast port (master_fast_client.h) when the master advertises one
// in its Health reply, and over gRPC otherwise; the rest always use gRPC.
// A fast port that cannot be connected to is retried after a pause, and
// meanwhile gRPC serves.
//
// gRPC stays out of this header.
//
// Thread safety: all methods may be called concurrently (one channel).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "store/master.h"

namespace crescent::store {

struct MasterClientOptions {
  std::chrono::milliseconds rpc_timeout{5000};
  // Use the master's fast port when it has one (benchmarks turn it off to
  // compare with gRPC alone).
  bool use_fast_port = true;
};

struct PingReply {
  std::string master_id;  // changes when the master restarts
  PingResult result;
  int64_t client_ttl_ms = 0;
};

struct MasterHealth {
  std::string master_id;
  std::string cluster_id;
  MasterStats stats;  // keys, allocated/total bytes, segments, clients
  uint16_t fast_port = 0;  // 0: the master serves no fast port
  std::string fast_unix;   // its abstract unix socket name on the master's host
};

class MasterClient {
 public:
  // "host:port". Does not wait for the master: the first call does.
  // `own_connection`: do not share a TCP connection with other
  // MasterClients of this process (benchmarks emulating separate clients).
  static std::unique_ptr<MasterClient> Create(std::string address,
                                              const MasterClientOptions& options = {},
                                              bool own_connection = false);
  ~MasterClient();
  MasterClient(const MasterClient&) = delete;
  MasterClient& operator=(const MasterClient&) = delete;

  const std::string& address() const;

  StatusOr<std::vector<Replica>> PutStart(const PutStartArgs& args);
  Status PutEnd(std::string_view key, uint32_t crc32c);
  Status PutRevoke(std::string_view key);
  StatusOr<ObjectInfo> GetReplicaList(std::string_view key);
  StatusOr<bool> Exist(std::string_view key);
  Status Remove(std::string_view key);
  StatusOr<uint64_t> RemoveAll();

  // Batch forms: the outer Status is the transport's; inner ones per item.
  StatusOr<std::vector<StatusOr<std::vector<Replica>>>> BatchPutStart(
      const std::vector<PutStartArgs>& items);
  StatusOr<std::vector<Status>> BatchPutEnd(const std::vector<std::string>& keys,
                                            const std::vector<uint32_t>& crcs);
  StatusOr<std::vector<Status>> BatchPutRevoke(const std::vector<std::string>& keys);
  StatusOr<std::vector<StatusOr<ObjectInfo>>> BatchGetReplicaList(
      const std::vector<std::string>& keys);
  StatusOr<std::vector<StatusOr<bool>>> BatchExist(const std::vector<std::string>& keys);
  StatusOr<std::vector<Status>> BatchRemove(const std::vector<std::string>& keys);

  // Reservations (MasterCore::Reserve): fast port only; UNIMPLEMENTED
  // when the master has none (then put with PutStart/PutEnd).
  StatusOr<Reservation> Reserve(std::string_view client_id, uint64_t size, uint64_t min_size,
                                std::string_view preferred_segment);
  StatusOr<std::vector<Status>> BatchCommit(const std::vector<CommitArgs>& items);
  Status Release(uint64_t reservation);
  // True when calls currently go over the fast port (after a first call).
  bool using_fast_port() const;

  StatusOr<uint64_t> MountSegment(std::string_view client_id, const SegmentSpec& spec,
                                  const std::vector<SegmentObject>& objects = {});
  Status UnmountSegment(std::string_view client_id, std::string_view name, uint64_t base);
  StatusOr<PingReply> Ping(std::string_view client_id);
  StatusOr<MasterHealth> Health();

  StatusOr<ObjectInfo> QueryKey(std::string_view key);
  StatusOr<std::vector<SegmentInfo>> ListSegments();
  StatusOr<std::vector<std::string>> ListKeys(std::string_view prefix, uint32_t limit);

 private:
  struct Impl;
  explicit MasterClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace crescent::store
