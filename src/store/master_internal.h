// Internal state of MasterCoreImpl (master.cc, master_eviction.cc). Not a
// public header.
#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <unordered_map>

#include "store/master.h"
#include "store/offset_allocator.h"

namespace crescent::store::internal {

struct Placement {
  uint32_t segment = 0;  // index into MasterCoreImpl::segments_
  uint64_t offset = 0;
};

struct Object {
  const std::string* key = nullptr;  // the map node's key (stable)
  uint64_t size = 0;
  uint32_t crc32c = 0;
  bool complete = false;
  bool soft_pin = false;
  uint64_t put_id = 0;         // matches the pending-put queue entry
  int64_t lease_until_us = 0;  // read lease end
  std::vector<Placement> placements;
  Object* lru_prev = nullptr;  // intrusive LRU links, complete objects only
  Object* lru_next = nullptr;
};

// Doubly linked list of complete objects, most recently used at the head.
struct LruList {
  Object* head = nullptr;
  Object* tail = nullptr;
  void PushFront(Object* o);
  void Unlink(Object* o);
  void Touch(Object* o) {
    if (head != o) {
      Unlink(o);
      PushFront(o);
    }
  }
};

struct Segment {
  SegmentSpec spec;
  std::string owner;
  bool live = false;
  std::unique_ptr<OffsetAllocator> alloc;
};

struct Client {
  int64_t last_ping_us = 0;
  std::vector<uint32_t> segments;
  std::vector<SegmentEvent> events;
  bool needs_snapshot = false;
};

// Lets the index be searched with a string_view (no copy per lookup).
struct KeyHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

struct PendingPut {
  int64_t deadline_us;
  uint64_t put_id;
  std::string key;
};

struct ReservationState {
  std::string client_id;
  uint32_t segment = 0;
  uint64_t offset = 0;  // in the segment
  uint64_t size = 0;    // rounded
  std::map<uint64_t, uint64_t> committed;  // offset -> rounded size
  uint64_t committed_bytes = 0;
  int64_t deadline_us = 0;  // renewed by every commit
};

}  // namespace crescent::store::internal

namespace crescent::store {

class MasterCoreImpl final : public MasterCore {
 public:
  MasterCoreImpl(const MasterOptions& options, Clock* clock);

  StatusOr<std::vector<Replica>> PutStart(const PutStartArgs& args) override;
  Status PutEnd(std::string_view key, uint32_t crc32c) override;
  Status PutRevoke(std::string_view key) override;
  StatusOr<ObjectInfo> GetReplicaList(std::string_view key) override;
  StatusOr<bool> Exist(std::string_view key) override;
  Status Remove(std::string_view key) override;
  uint64_t RemoveAll() override;
  std::vector<StatusOr<std::vector<Replica>>> BatchPutStart(
      const std::vector<PutStartArgs>& items) override;
  std::vector<Status> BatchPutEnd(const std::vector<std::string>& keys,
                                  const std::vector<uint32_t>& crcs) override;
  std::vector<Status> BatchPutRevoke(const std::vector<std::string>& keys) override;
  std::vector<StatusOr<ObjectInfo>> BatchGetReplicaList(
      const std::vector<std::string>& keys) override;
  std::vector<StatusOr<bool>> BatchExist(const std::vector<std::string>& keys) override;
  std::vector<Status> BatchRemove(const std::vector<std::string>& keys) override;
  StatusOr<uint64_t> MountSegment(std::string_view client_id, const SegmentSpec& spec,
                                  const std::vector<SegmentObject>& objects) override;
  Status UnmountSegment(std::string_view client_id, std::string_view name,
                        uint64_t base) override;
  PingResult Ping(std::string_view client_id) override;
  void Tick() override;
  StatusOr<ObjectInfo> QueryKey(std::string_view key) override;
  std::vector<SegmentInfo> ListSegments() override;
  std::vector<std::string> ListKeys(std::string_view prefix, size_t limit) override;
  MasterStats Stats() override;
  StatusOr<Reservation> Reserve(std::string_view client_id, uint64_t size, uint64_t min_size,
                                std::string_view preferred_segment) override;
  std::vector<Status> BatchCommit(const std::vector<CommitArgs>& items) override;
  Status Release(uint64_t reservation) override;

 private:
  using ObjectMap =
      std::unordered_map<std::string, internal::Object, internal::KeyHash, std::equal_to<>>;

  // Everything below runs with mu_ held.
  StatusOr<std::vector<Replica>> PutStartLocked(const PutStartArgs& args, int64_t now);
  Status PutEndLocked(std::string_view key, uint32_t crc32c);
  Status PutRevokeLocked(std::string_view key);
  StatusOr<ObjectInfo> GetLocked(std::string_view key, int64_t now);
  Status RemoveLocked(std::string_view key, int64_t now);
  // Tries to place `replica_num` copies on distinct live segments.
  bool TryPlace(const PutStartArgs& args, std::vector<internal::Placement>* out);
  // A new complete object with one copy whose range is already allocated
  // (a commit, a re-registration); the key must be absent.
  internal::Object& AddCompleteObject(std::string_view key, uint64_t size, uint32_t crc32c,
                                      bool soft_pin, internal::Placement placement);
  // Frees an object's ranges, tells owners, unlinks and erases it.
  void EraseObject(ObjectMap::iterator it, bool notify_owners);
  // Evicts least recently used unleased objects (unpinned first) until
  // `bytes` are freed or none is left; returns bytes freed. When `retry`
  // is given, stops as soon as it places the put (out: its placements).
  uint64_t EvictLocked(uint64_t bytes, int64_t now, const PutStartArgs* retry,
                       std::vector<internal::Placement>* out);
  void MaybeEvictAboveWatermark(int64_t now);
  void DropSegment(uint32_t index);
  void ExpireClients(int64_t now);
  void ReclaimPuts(int64_t now);
  // Reservations (master_reserve.cc).
  Status CommitLocked(const CommitArgs& args, int64_t now);
  // Frees what the reservation did not commit (when its segment is live)
  // and forgets it.
  void EndReservation(std::unordered_map<uint64_t, internal::ReservationState>::iterator it);
  void ReclaimReservations(int64_t now);
  // Forgets every reservation on segment `index` (it is being dropped).
  void DropReservationsOn(uint32_t index);
  void DropReservationsOf(const std::string& client_id);
  void Notify(const internal::Object& o, const internal::Placement& p, bool added);
  Replica ToReplica(const internal::Placement& p) const;
  std::vector<SegmentEvent> SnapshotFor(const internal::Client& c);
  internal::Client& TouchClient(std::string_view client_id, int64_t now, bool* known);

  // Constant after construction.
  const MasterOptions options_;
  Clock* const clock_;

  std::mutex mu_;
  // Guarded by mu_.
  ObjectMap objects_;
  internal::LruList lru_;         // unpinned complete objects
  internal::LruList lru_pinned_;  // soft-pinned complete objects
  std::vector<internal::Segment> segments_;  // index = id; dead ones reused
  std::map<std::pair<std::string, uint64_t>, uint32_t> segment_index_;  // (name, base)
  std::unordered_map<std::string, internal::Client> clients_;
  std::deque<internal::PendingPut> pending_;  // in deadline order
  uint64_t next_put_id_ = 1;
  uint64_t total_bytes_ = 0;
  uint64_t allocated_bytes_ = 0;
  uint64_t max_segment_bytes_ = 0;
  uint64_t pending_count_ = 0;
  int64_t last_tick_us_ = 0;
  int64_t serving_since_us_ = 0;
  MasterStats counters_;  // evicted_*, reclaimed_puts, expired_clients, stalls
  std::unordered_map<uint64_t, internal::ReservationState> reservations_;
  uint64_t reserved_bytes_ = 0;  // reserved and not committed
  std::mt19937_64 reservation_ids_;  // random: ids never repeat across restarts
};

}  // namespace crescent::store
