// ClientImpl: state shared by client.cc (setup, heartbeat, re-registration)
// and client_io.cc (puts, gets, batches). Not a public header.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "store/client.h"
#include "store/coalescer.h"
#include "store/master.h"
#include "store/master_client.h"
#include "store/offset_allocator.h"
#include "transfer/transfer_engine.h"

namespace crescent::store {

class ClientImpl;

inline int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A range of the local buffer, returned on destruction.
class Staging {
 public:
  Staging() = default;
  Staging(ClientImpl* owner, uint8_t* data, uint64_t offset, uint64_t size)
      : owner_(owner), data_(data), offset_(offset), size_(size) {}
  Staging(Staging&& o) noexcept { *this = std::move(o); }
  Staging& operator=(Staging&& o) noexcept;
  ~Staging();
  uint8_t* data() const { return data_; }

 private:
  ClientImpl* owner_ = nullptr;
  uint8_t* data_ = nullptr;
  uint64_t offset_ = 0;
  uint64_t size_ = 0;
};

class ClientImpl final : public Client {
 public:
  explicit ClientImpl(const ClientOptions& options);
  ~ClientImpl() override;
  Status Init();

  Status Put(std::string_view key, std::span<const uint8_t> value,
             const PutOptions& options) override;
  StatusOr<std::vector<uint8_t>> Get(std::string_view key) override;
  std::vector<Status> BatchPut(const std::vector<std::string>& keys,
                               const std::vector<std::span<const uint8_t>>& values,
                               const PutOptions& options) override;
  std::vector<StatusOr<std::vector<uint8_t>>> BatchGet(
      const std::vector<std::string>& keys) override;
  Status RegisterBuffer(void* data, size_t size) override;
  Status UnregisterBuffer(void* data) override;
  Status PutFrom(std::string_view key, ConstBuffer value, const PutOptions& options) override;
  StatusOr<size_t> GetInto(std::string_view key, MutableBuffer out) override;
  std::vector<Status> BatchPutFrom(const std::vector<std::string>& keys,
                                   const std::vector<ConstBuffer>& values,
                                   const PutOptions& options) override;
  std::vector<StatusOr<size_t>> BatchGetInto(const std::vector<std::string>& keys,
                                             const std::vector<MutableBuffer>& outs) override;
  std::vector<StatusOr<size_t>> BatchGetIntoScatter(
      const std::vector<std::string>& keys,
      const std::vector<std::vector<MutableBuffer>>& pieces) override;
  StatusOr<bool> Exist(std::string_view key) override;
  StatusOr<std::vector<bool>> BatchExist(const std::vector<std::string>& keys) override;
  Status Remove(std::string_view key) override;
  StatusOr<uint64_t> RemoveAll() override;
  const std::string& segment_name() const override { return segment_name_; }
  const std::string& client_id() const override { return client_id_; }
  MasterClient& master() override { return *master_; }
  size_t held_objects() const override;

  // ---- Reservations (client_reserve.cc): one-round-trip puts ----
  // A range of a master reservation that one value is written into.
  struct Slab {
    Reservation r;
    uint64_t used = 0;        // bytes carved, guarded by slab_mu_
    int outstanding = 0;      // carved, not yet committed or given up; guarded
    bool retired = false;     // no more carving; released at outstanding 0
    int64_t last_use_us = 0;  // guarded by slab_mu_
  };
  struct Piece {
    std::shared_ptr<Slab> slab;
    uint64_t address = 0;
  };
  // A place for `size` bytes in the current reservation (reserving a new
  // one when it is used up); nullopt: put this value with PutStart/PutEnd.
  std::optional<Piece> Carve(uint64_t size);
  // The piece's value was committed (`committed`) or given up; releases a
  // retired reservation once nothing carved from it is outstanding. `dead`:
  // the master no longer knows the reservation; `retire`: carve no more
  // from it (a write into it failed).
  void Finish(const std::shared_ptr<Slab>& slab, bool committed, bool dead = false,
              bool retire = false);
  // Retires the current reservation when idle for `idle` (or always), e.g.
  // from the heartbeat and on shutdown; `forget`: the master restarted, so
  // nothing is released.
  void RetireSlab(std::chrono::microseconds idle, bool forget = false);

  // Staging from the local buffer; RESOURCE_EXHAUSTED when it stays full.
  StatusOr<Staging> Stage(uint64_t size);
  void Unstage(uint64_t offset, uint64_t size);

 private:
  // One value to write to all of its replicas, or to read from one of them.
  struct WriteItem {
    const std::vector<Replica>* replicas;
    const void* src;
    uint64_t size;
    bool src_registered;
    Status result;
    uint32_t crc = 0;  // Crc32c of the value, set by WriteObjects on success
  };
  struct ReadItem {
    const ObjectInfo* info;
    void* dst;  // null: read into `pieces` instead (all registered)
    bool dst_registered;
    int64_t granted_us;  // when the lease was granted
    Status result;
    const std::vector<MutableBuffer>* pieces = nullptr;
  };
  struct Op {
    transfer::OpCode opcode;
    void* local;
    const std::string* segment;
    uint64_t address;
    uint64_t length;
    uint32_t* crc32c = nullptr;  // receives the CRC-32C of the bytes moved
  };

  void WriteObjects(std::vector<WriteItem>& items);
  void ReadObjects(std::vector<ReadItem>& items);
  // Runs ops (own-segment ones by memcpy), one status per op.
  std::vector<Status> RunOps(const std::vector<Op>& ops);
  StatusOr<transfer::SegmentHandle> OpenSegment(const std::string& name);
  void ForgetSegment(const std::string& name);
  // The local address of [address, address + length) in our own segment.
  uint8_t* OwnSegmentPointer(uint64_t address, uint64_t length) const;
  bool IsRegistered(const void* p, uint64_t length) const;
  PutStartArgs MakeArgs(std::string_view key, uint64_t size, const PutOptions& options) const;
  std::vector<Status> PutValues(const std::vector<std::string>& keys,
                                const std::vector<ConstBuffer>& values,
                                const std::vector<bool>& registered, const PutOptions& options,
                                bool allow_reservations = true);
  // Retires `slab` (slab_mu_ held); true when it should be released now.
  bool RetireLocked(const std::shared_ptr<Slab>& slab);

  void HeartbeatLoop();
  Status Remount();
  void ApplyEvents(const PingResult& result);

  // Constant after Init.
  ClientOptions options_;
  std::string client_id_;
  std::string segment_name_;
  std::unique_ptr<MasterClient> master_;
  std::shared_ptr<transfer::MetadataStore> metadata_;
  std::unique_ptr<transfer::TransferEngine> engine_;
  transfer::RegisteredRegion segment_{};  // our mounted memory (length 0: none)
  uint8_t* local_buffer_ = nullptr;
  uint64_t local_buffer_size_ = 0;

  // Concurrent calls share batch RPCs (see coalescer.h).
  using PutEndItem = std::pair<std::string, uint32_t>;
  std::unique_ptr<Coalescer<PutStartArgs, StatusOr<std::vector<Replica>>>> put_start_rpc_;
  std::unique_ptr<Coalescer<PutEndItem, Status>> put_end_rpc_;
  std::unique_ptr<Coalescer<std::string, StatusOr<ObjectInfo>>> get_rpc_;

  std::unique_ptr<Coalescer<CommitArgs, Status>> commit_rpc_;
  std::mutex slab_mu_;
  std::shared_ptr<Slab> slab_;     // guarded by slab_mu_: the one carved from
  int64_t reserve_retry_us_ = 0;   // guarded by slab_mu_: no Reserve before

  std::mutex staging_mu_;
  std::condition_variable staging_cv_;
  std::unique_ptr<OffsetAllocator> staging_;  // guarded by staging_mu_

  mutable std::mutex mu_;
  std::unordered_map<std::string, transfer::SegmentHandle> handles_;  // guarded by mu_
  std::vector<std::pair<uintptr_t, uint64_t>> registered_;            // guarded by mu_
  // Our segment's objects by offset, from the master's Ping events.
  std::map<uint64_t, SegmentObject> held_;  // guarded by mu_
  std::string master_id_;                   // guarded by mu_

  std::mutex hb_mu_;
  std::condition_variable hb_cv_;
  bool stopping_ = false;  // guarded by hb_mu_
  std::thread heartbeat_;
};

}  // namespace crescent::store
