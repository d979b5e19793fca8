// Client: puts and gets objects of the distributed KV store.
//
// A client contributes memory to the pool (global_segment_size of
// mooncake.json, mounted as a segment with the master) and registers a
// local buffer (local_buffer_size) through which copying Put/Get stage
// bytes. Bytes move straight between this process and the segments that
// hold the copies, through the transfer engine (shared memory on one host,
// tcp otherwise); the master only allocates and indexes.
//
//   ASSIGN_OR_RETURN(auto config, LoadMooncakeConfig());
//   ASSIGN_OR_RETURN(auto client, store::Client::Create({.config = config}));
//   RETURN_IF_ERROR(client->Put("k", bytes));
//   ASSIGN_OR_RETURN(std::vector<uint8_t> v, client->Get("k"));
//
// Every object carries the CRC-32C of its value; every read checks it and a
// mismatch is an error (DATA_LOSS), never bytes. Error codes say what
// happened (docs/store.md):
//   NOT_FOUND           no such key (or evicted, or being written)
//   ALREADY_EXISTS      the key is stored; Remove it first
//   RESOURCE_EXHAUSTED  no room in the pool, even after eviction
//   DEADLINE_EXCEEDED   the read lease expired before the read finished
//   ABORTED             a transfer failed (peer dead, segment gone)
//   DATA_LOSS           checksum mismatch on every copy
//   UNAVAILABLE         master unreachable
//   INVALID_ARGUMENT    bad key, empty value; OUT_OF_RANGE: a buffer too
//                       small or not registered
//
// Liveness: a background thread pings the master. When the master restarts
// (or expired us after a partition), the client re-mounts its segment and
// re-registers every object whose bytes it still holds.
//
// Thread safety: every method may be called from many threads at once.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/status.h"

namespace crescent::store {

class MasterClient;
}  // namespace crescent::store
namespace crescent::transfer {
class MetadataStore;
}  // namespace crescent::transfer
namespace crescent::store {

struct ClientOptions {
  // master_server_address, metadata_server, local_hostname, protocol,
  // global_segment_size (0: contribute nothing), local_buffer_size.
  MooncakeConfig config;
  // The transfer engine's metadata service; when null it is opened from
  // config.metadata_server. (Tests share one in-process store.)
  std::shared_ptr<transfer::MetadataStore> metadata;
  // Transfer-engine segment name; default "<local_hostname>:<pid>:<random>".
  std::string segment_name;
  // Force tcp even between processes of one host (benchmarks, tests).
  bool tcp_only = false;
  uint32_t replica_num = 1;          // default copies per object
  bool prefer_local_segment = true;  // first copy into our own segment when it fits
  std::chrono::milliseconds rpc_timeout{5000};
  std::chrono::milliseconds transfer_timeout{10000};
  std::chrono::milliseconds ping_interval{1000};
  // Small single-copy values go into ranges the master reserved for this
  // client, so a put is one master round trip instead of two (needs the
  // master's fast port; off: always PutStart/PutEnd).
  bool use_reservations = true;
  // The master's fast port when it has one (off: gRPC for every call).
  bool use_fast_port = true;
};

struct PutOptions {
  uint32_t replica_num = 0;  // 0: ClientOptions::replica_num
  bool soft_pin = false;     // evicted only after all unpinned objects
};

// A value to put from caller memory (PutFrom: must be registered).
struct ConstBuffer {
  const void* data = nullptr;
  size_t size = 0;
};
// Where to get a value into (GetInto: must be registered).
struct MutableBuffer {
  void* data = nullptr;
  size_t capacity = 0;
};

class Client {
 public:
  // Connects the metadata service, starts the transfer engine, mounts the
  // segment with the master and starts the heartbeat. Fails (naming what)
  // when any of those cannot be reached.
  static StatusOr<std::unique_ptr<Client>> Create(const ClientOptions& options);
  // Unmounts the segment (its objects leave the store) and stops.
  virtual ~Client() = default;

  // ---- copying forms (stage through the local buffer) ----
  virtual Status Put(std::string_view key, std::span<const uint8_t> value,
                     const PutOptions& options = {}) = 0;
  virtual StatusOr<std::vector<uint8_t>> Get(std::string_view key) = 0;
  virtual std::vector<Status> BatchPut(const std::vector<std::string>& keys,
                                       const std::vector<std::span<const uint8_t>>& values,
                                       const PutOptions& options = {}) = 0;
  virtual std::vector<StatusOr<std::vector<uint8_t>>> BatchGet(
      const std::vector<std::string>& keys) = 0;

  // ---- zero-copy forms: buffers inside registered memory ----
  // Registers caller memory for PutFrom/GetInto; it must outlive the
  // registration.
  virtual Status RegisterBuffer(void* data, size_t size) = 0;
  virtual Status UnregisterBuffer(void* data) = 0;
  virtual Status PutFrom(std::string_view key, ConstBuffer value,
                         const PutOptions& options = {}) = 0;
  // The value's size; OUT_OF_RANGE when it exceeds the capacity.
  virtual StatusOr<size_t> GetInto(std::string_view key, MutableBuffer out) = 0;
  virtual std::vector<Status> BatchPutFrom(const std::vector<std::string>& keys,
                                           const std::vector<ConstBuffer>& values,
                                           const PutOptions& options = {}) = 0;
  virtual std::vector<StatusOr<size_t>> BatchGetInto(const std::vector<std::string>& keys,
                                                     const std::vector<MutableBuffer>& outs) = 0;
  // Scatter form: the value of keys[i] fills pieces[i] in order (e.g. the
  // scattered blocks of a paged KV cache), each piece inside registered
  // memory; the pieces' capacities must add up to exactly the value's size
  // (INVALID_ARGUMENT otherwise). The checksum covers the whole value; on
  // any error the pieces hold unspecified bytes.
  virtual std::vector<StatusOr<size_t>> BatchGetIntoScatter(
      const std::vector<std::string>& keys,
      const std::vector<std::vector<MutableBuffer>>& pieces) = 0;

  // ---- index ----
  virtual StatusOr<bool> Exist(std::string_view key) = 0;
  // One RPC for many keys (the KV connector's prefix lookup).
  virtual StatusOr<std::vector<bool>> BatchExist(const std::vector<std::string>& keys) = 0;
  virtual Status Remove(std::string_view key) = 0;
  virtual StatusOr<uint64_t> RemoveAll() = 0;

  virtual const std::string& segment_name() const = 0;
  virtual const std::string& client_id() const = 0;
  // The master connection, for tools (stat, ls).
  virtual MasterClient& master() = 0;
  // Objects this client holds in its own segment (as last told by the
  // master), i.e. what it would re-register after a master restart.
  virtual size_t held_objects() const = 0;
};

}  // namespace crescent::store
