// MasterCore: the store master's logic, with no I/O.
//
// Holds the object index (key -> replicas), the segments that clients
// mount into the pool and one OffsetAllocator per segment, read leases,
// eviction and client liveness. It never sees object bytes: writers and
// readers move bytes themselves, straight into and out of segments, through
// the transfer engine. The gRPC server (master_server.h) is a thin layer
// over this class; the semantics live here and in docs/store.md.
//
// Life of an object:
//   PutStart   allocates `replica_num` ranges on distinct segments; the
//              object is pending (invisible to readers, never evicted).
//   PutEnd     publishes it with the value's CRC-32C; now readable.
//   PutRevoke  (or a writer that never finishes within put_timeout) frees it.
//   GetReplicaList grants a read lease of default_kv_lease_ttl: until it
//              ends the object is neither evicted nor removed.
//   Remove / RemoveAll / eviction / loss of its segments end it.
//
// Time: all time comes from the injected Clock. The owner calls Tick()
// periodically (the server: every 100 ms); Tick reclaims unfinished puts,
// expires silent clients and evicts above the high watermark.
//
// Thread safety: every method may be called concurrently (one mutex; each
// operation is O(log n) apart from the rare scans noted below).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "store/clock.h"

namespace crescent::store {

struct MasterOptions {
  // Eviction starts when allocated bytes exceed this share of all mounted
  // bytes, and when an allocation fails.
  double eviction_high_watermark_ratio = 0.9;
  // Each eviction frees at least this share of all mounted bytes.
  double eviction_ratio = 0.05;
  // A read lease lasts this long (milliseconds).
  int64_t default_kv_lease_ttl_ms = 10000;
  // A client that has not pinged for this long loses its segments.
  int64_t client_ttl_ms = 10000;
  // A put not ended (PutEnd/PutRevoke) within this long is reclaimed.
  int64_t put_timeout_ms = 30000;
  // Two Ticks further apart than this mean the master itself stalled
  // (paused, swapped out, starved): clients are then judged only after the
  // master has served for client_ttl again.
  int64_t stall_threshold_ms = 1000;
  // Per-client queue of index changes in its segments (see Ping); beyond
  // this the queue is dropped and the next Ping carries a full snapshot.
  size_t max_events_per_client = 1 << 20;
};

// A range of a client's registered memory contributed to the pool.
struct SegmentSpec {
  std::string name;  // transfer-engine segment name (where peers find it)
  uint64_t base = 0; // address of the range's first byte in that segment
  uint64_t size = 0; // bytes
};

// One copy of an object's value.
struct Replica {
  std::string segment;  // transfer-engine segment name
  uint64_t address = 0; // where the value's first byte lives
};

struct PutStartArgs {
  std::string key;
  uint64_t size = 0;             // value bytes, >= 1
  uint32_t replica_num = 1;      // copies, each on a distinct segment
  bool soft_pin = false;         // evicted only after every unpinned object
  std::string preferred_segment; // place the first copy here when it fits
};

// What a reader needs: where the copies are and how to check them.
struct ObjectInfo {
  uint64_t size = 0;
  uint32_t crc32c = 0;
  bool soft_pin = false;
  bool complete = false;          // false: a put is in progress (QueryKey only)
  std::vector<Replica> replicas;
  int64_t lease_ms = 0;           // the read lease granted (GetReplicaList)
};

// An object copy inside one of a client's segments, as the owner records
// it so that it can re-register it with a restarted master.
struct SegmentObject {
  std::string segment;  // segment name
  uint64_t base = 0;    // segment base (with name: which mount)
  std::string key;
  uint64_t offset = 0;  // from base
  uint64_t size = 0;
  uint32_t crc32c = 0;
  bool soft_pin = false;
};

struct SegmentEvent {
  bool added = true;  // false: the copy was removed or evicted
  SegmentObject object;
};

struct PingResult {
  bool known = true;    // false: the master did not know this client (it
                        // restarted, or expired us): re-mount and re-register
  bool snapshot = false;  // events is a full listing, not a delta
  std::vector<SegmentEvent> events;
};

// A range of one segment handed to one client, which places small values
// in it itself: each put is then one round trip (write, then Commit)
// instead of two (PutStart, write, PutEnd). See MasterCore::Reserve.
struct Reservation {
  uint64_t id = 0;
  std::string segment;   // transfer-engine segment name
  uint64_t address = 0;  // first byte of the range in that segment
  uint64_t size = 0;     // bytes (a multiple of kAllocAlignment)
  int64_t ttl_ms = 0;    // unused for this long, the master takes it back
};

// Publishes a value its writer has placed inside a reservation.
struct CommitArgs {
  uint64_t reservation = 0;
  std::string key;
  uint64_t address = 0;  // inside the reservation, kAllocAlignment-aligned
  uint64_t size = 0;     // value bytes, >= 1
  uint32_t crc32c = 0;
  bool soft_pin = false;
};

struct SegmentInfo {
  SegmentSpec spec;
  std::string owner;  // client id
  uint64_t allocated = 0;
  uint64_t largest_free = 0;
  size_t free_blocks = 0;
};

struct MasterStats {
  uint64_t keys = 0;            // complete objects
  uint64_t pending_puts = 0;
  uint64_t allocated_bytes = 0;
  uint64_t total_bytes = 0;
  uint64_t segments = 0;
  uint64_t clients = 0;
  uint64_t evicted_objects = 0;  // since start
  uint64_t evicted_bytes = 0;
  uint64_t reclaimed_puts = 0;
  uint64_t expired_clients = 0;
  uint64_t stalls = 0;
  uint64_t reservations = 0;     // live reservations
  uint64_t reserved_bytes = 0;   // of those, bytes not yet committed
};

class MasterCore {
 public:
  // `clock` must outlive the core (SystemClock() does).
  static std::unique_ptr<MasterCore> Create(const MasterOptions& options,
                                            Clock* clock = SystemClock());
  virtual ~MasterCore() = default;

  // ---- Writers ----
  // The ranges to write, one per replica. ALREADY_EXISTS when the key is
  // stored or being written; RESOURCE_EXHAUSTED when no room is left after
  // eviction (or the value is larger than every segment); INVALID_ARGUMENT
  // for a bad key, zero size or replica_num.
  virtual StatusOr<std::vector<Replica>> PutStart(const PutStartArgs& args) = 0;
  virtual Status PutEnd(std::string_view key, uint32_t crc32c) = 0;
  virtual Status PutRevoke(std::string_view key) = 0;

  // ---- Readers ----
  // NOT_FOUND when absent or still being written. Grants a read lease.
  virtual StatusOr<ObjectInfo> GetReplicaList(std::string_view key) = 0;
  // True for a complete object; no lease.
  virtual StatusOr<bool> Exist(std::string_view key) = 0;

  // ---- Reservations (one-round-trip puts of single-copy values) ----
  // Allocates up to `size` bytes, at most 1/32 of the pool but never less
  // than `min_size`, in one live segment (`preferred_segment` first when it
  // fits, then the emptiest; for `min_size` it evicts as a put would) for
  // `client_id` alone. The client carves values out of it (aligned to
  // kAllocAlignment, never overlapping), writes their bytes and publishes
  // each with Commit. Until then the space is neither readable nor
  // evictable. A reservation ends by Release, by going unused for
  // put_timeout, when its client expires or its segment leaves; what was
  // committed stays, the rest is freed.
  virtual StatusOr<Reservation> Reserve(std::string_view client_id, uint64_t size,
                                        uint64_t min_size,
                                        std::string_view preferred_segment) = 0;
  // Per item: ALREADY_EXISTS when the key is stored or being written (the
  // range stays the reservation's); FAILED_PRECONDITION when the
  // reservation is unknown (released, expired, the master restarted) or the
  // range is outside it, misaligned or overlaps a committed one;
  // INVALID_ARGUMENT for a bad key or size. OK: the value is published.
  virtual std::vector<Status> BatchCommit(const std::vector<CommitArgs>& items) = 0;
  virtual Status Release(uint64_t reservation) = 0;

  // ---- Removal ----
  // FAILED_PRECONDITION while leased or being written.
  virtual Status Remove(std::string_view key) = 0;
  // Removes every complete object not under lease; returns how many.
  virtual uint64_t RemoveAll() = 0;

  // ---- Batch forms: one lock acquisition, one result per item ----
  virtual std::vector<StatusOr<std::vector<Replica>>> BatchPutStart(
      const std::vector<PutStartArgs>& items) = 0;
  virtual std::vector<Status> BatchPutEnd(const std::vector<std::string>& keys,
                                          const std::vector<uint32_t>& crcs) = 0;
  virtual std::vector<Status> BatchPutRevoke(const std::vector<std::string>& keys) = 0;
  virtual std::vector<StatusOr<ObjectInfo>> BatchGetReplicaList(
      const std::vector<std::string>& keys) = 0;
  virtual std::vector<StatusOr<bool>> BatchExist(const std::vector<std::string>& keys) = 0;
  virtual std::vector<Status> BatchRemove(const std::vector<std::string>& keys) = 0;

  // ---- Clients and segments ----
  // Adds `spec` to the pool, owned by `client_id`, and re-registers the
  // copies listed in `objects` (all in this segment: offsets from its
  // base). A copy that overlaps another, or whose key is stored with a
  // different size or checksum, is skipped. Returns how many were taken.
  // Mounting the same (name, base) again from the same client is allowed.
  virtual StatusOr<uint64_t> MountSegment(std::string_view client_id, const SegmentSpec& spec,
                                          const std::vector<SegmentObject>& objects = {}) = 0;
  // Drops the segment and every copy in it (also leased ones: its memory
  // is going away). Objects left without copies disappear.
  virtual Status UnmountSegment(std::string_view client_id, std::string_view name,
                                uint64_t base) = 0;
  // Heartbeat. Also hands the owner the index changes in its segments
  // since its last Ping (see PingResult).
  virtual PingResult Ping(std::string_view client_id) = 0;

  // ---- Time ----
  virtual void Tick() = 0;

  // ---- Introspection (scans: for tools and HTTP, not the hot path) ----
  virtual StatusOr<ObjectInfo> QueryKey(std::string_view key) = 0;
  virtual std::vector<SegmentInfo> ListSegments() = 0;
  // Complete keys starting with prefix, sorted, at most `limit`.
  virtual std::vector<std::string> ListKeys(std::string_view prefix, size_t limit) = 0;
  virtual MasterStats Stats() = 0;
};

// Validation shared with the client, so both say the same thing.
Status ValidateKey(std::string_view key);

}  // namespace crescent::store
