// The transfer engine: moves bytes between registered memory of processes.
//
// The model is Mooncake's transfer engine. A process registers memory
// regions; together they form its *segment*, published under a name in the
// metadata service (host, tcp port, shared-memory socket, buffers; see
// docs/transfer.md). A peer opens a segment by name and submits batches of
// READ/WRITE requests {local address, segment, remote offset, length}; each
// request ends completed, failed or timed out, with an error that says why.
//
//   auto engine = TransferEngine::Create(options, metadata);
//   auto region = engine->AllocateSegmentMemory(64 << 20);    // exposed to peers
//   ...
//   auto seg = engine->OpenSegment("prefill-0");
//   auto batch = engine->AllocateBatch(128);
//   engine->SubmitTransfer(batch, {{OpCode::kRead, dst, seg, 4096, 1 << 20}});
//   engine->WaitBatch(batch, std::chrono::seconds(5));
//
// Remote offsets address the target's segment: every registered region gets
// a range [segment_offset, segment_offset + length) in one offset space (the
// region's RegisteredRegion::segment_offset). A request must lie inside one
// region on both sides: local memory must have been registered with this
// engine, the remote range must be inside a region of the target. Anything
// else is rejected at submission with INVALID_ARGUMENT / OUT_OF_RANGE; the
// target checks again before touching its memory.
//
// Transports (hidden behind this interface, see transport.h): tcp between
// any two hosts; shared memory when both ends run on one host (same boot id
// and hostname) and the remote region was allocated with
// AllocateSegmentMemory. A peer that dies makes its requests fail within
// `transfer_timeout`; requests to other peers are unaffected.
//
// Thread safety: every method may be called from many threads at once.
// A request in a terminal state (completed/failed/timeout) is never touched
// again by the engine: its local memory may be reused at once.
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
#include "transfer/metadata/metadata.h"

namespace crescent::transfer {

// Which transport carries requests to a segment.
enum class TransportPolicy {
  kAuto,     // shared memory when possible (same host, shareable region), else tcp
  kTcpOnly,  // always tcp, even on one host (benchmarks, tests)
  kShmOnly,  // shared memory or fail: requests that cannot use it are rejected
};

struct TransferEngineOptions {
  // Name under which this engine's segment is published. Required.
  std::string segment_name;
  // Address peers use to reach our tcp server (mooncake.json local_hostname).
  std::string local_hostname = "127.0.0.1";
  // Port of the tcp server; 0 picks a free one (published in the descriptor).
  uint16_t tcp_port = 0;
  TransportPolicy policy = TransportPolicy::kAuto;
  // Pooled tcp connections (each with its own worker thread) per peer.
  int connections_per_peer = 4;
  // Large requests are split into slices of this many bytes, spread over
  // the pooled connections.
  uint64_t slice_size = 1 << 20;
  // A request not finished after this long ends in kTimeout. Also bounds how
  // long a dead or hung peer can hold requests.
  std::chrono::milliseconds transfer_timeout{10000};
  // SO_SNDBUF/SO_RCVBUF of tcp sockets, both sides (0 = kernel autotuning;
  // the kernel caps it at net.core.wmem_max/rmem_max). Measured on loopback
  // (docs/benchmarks.md): 4 MiB moves 1 MiB writes 2.5-3x faster than
  // autotuning, which keeps the send buffer small and wakes the peer often.
  int socket_buffer_bytes = 4 << 20;
  // Key prefix in the metadata service: segments live under
  // "<cluster_id>/segments/<name>".
  std::string cluster_id = "crescent";
};

// From mooncake.json: local_hostname, protocol ("tcp"; "rdma" is refused
// with a message saying this build has no RDMA transport).
StatusOr<TransferEngineOptions> TransferEngineOptionsFromConfig(const MooncakeConfig& config,
                                                                std::string segment_name);

enum class OpCode : uint8_t { kRead = 1, kWrite = 2 };

// An opened remote (or our own) segment.
using SegmentHandle = uint64_t;
using BatchId = uint64_t;

struct TransferRequest {
  OpCode opcode = OpCode::kRead;
  void* local = nullptr;       // inside memory registered with this engine
  SegmentHandle segment = 0;   // from OpenSegment
  uint64_t remote_offset = 0;  // in the target segment's offset space
  uint64_t length = 0;         // bytes, > 0
  // Optional: receives the CRC-32C (common/crc32c.h) of the bytes moved when
  // the request completes. Same-host writes compute it in the same pass as
  // the copy (about free); other routes run it over the local memory.
  uint32_t* crc32c = nullptr;
};

enum class TransferState { kPending, kCompleted, kFailed, kTimeout };
std::string_view TransferStateName(TransferState state);

struct TransferStatus {
  TransferState state = TransferState::kPending;
  Status error;  // why, for kFailed / kTimeout
};

// A region of registered memory as the segment exposes it.
struct RegisteredRegion {
  void* address = nullptr;
  uint64_t segment_offset = 0;  // where peers address it
  uint64_t length = 0;          // bytes
  bool shareable = false;       // allocated by the engine: reachable via shared memory
};

// What a peer's segment looks like, from its descriptor.
struct SegmentInfo {
  std::string name;
  std::string host;
  uint16_t tcp_port = 0;
  bool shared_memory = false;   // same host and shm socket reachable
  std::vector<RegisteredRegion> regions;  // address is null (remote)
};

class TransferEngine {
 public:
  // Starts the tcp and shared-memory servers and publishes the (empty)
  // segment. `metadata` is shared with the caller.
  static StatusOr<std::unique_ptr<TransferEngine>> Create(
      const TransferEngineOptions& options, std::shared_ptr<MetadataStore> metadata);

  // Unpublishes the segment, fails pending requests, stops the servers and
  // frees memory from AllocateSegmentMemory.
  virtual ~TransferEngine() = default;

  virtual const std::string& segment_name() const = 0;

  // ---- local memory ----
  // Allocates `length` bytes of shareable memory (memfd), registers and
  // publishes it. Owned by the engine; freed by FreeSegmentMemory or the
  // destructor. Same-host peers reach it with memcpy.
  virtual StatusOr<RegisteredRegion> AllocateSegmentMemory(uint64_t length) = 0;
  virtual Status FreeSegmentMemory(void* address) = 0;

  // Registers caller-owned memory (source/destination of our requests, and
  // exposed to peers over tcp). The memory must outlive the registration.
  virtual StatusOr<RegisteredRegion> RegisterMemory(void* address, uint64_t length) = 0;
  // Blocks until in-flight peer accesses to the region have finished.
  virtual Status UnregisterMemory(void* address) = 0;

  virtual std::vector<RegisteredRegion> LocalRegions() const = 0;

  // ---- peers ----
  // Looks the segment up in the metadata service (NOT_FOUND names the key)
  // and prepares a transport to it. Opening the same name twice returns
  // the same handle.
  virtual StatusOr<SegmentHandle> OpenSegment(std::string_view name) = 0;
  // Re-reads the descriptor (e.g. after the peer registered more memory).
  virtual Status RefreshSegment(SegmentHandle segment) = 0;
  virtual StatusOr<SegmentInfo> GetSegmentInfo(SegmentHandle segment) = 0;
  // Requests to it still queued are cancelled (CANCELLED); wait for your
  // batches first to avoid that.
  virtual Status CloseSegment(SegmentHandle segment) = 0;

  // ---- batches ----
  // A batch holds up to `capacity` requests (over any number of submits).
  virtual StatusOr<BatchId> AllocateBatch(size_t capacity) = 0;
  // Validates every request first: if one is invalid nothing is submitted
  // and the error names its index. Shared-memory requests are copied inside
  // this call; tcp requests run in the background.
  virtual Status SubmitTransfer(BatchId batch, std::span<const TransferRequest> requests) = 0;
  // `index` counts requests across the batch's submits, from 0.
  virtual StatusOr<TransferStatus> GetTransferStatus(BatchId batch, size_t index) = 0;
  // Waits until every submitted request is terminal. OK if all completed,
  // else the first failure; DEADLINE_EXCEEDED if `timeout` passed first.
  virtual Status WaitBatch(BatchId batch, std::chrono::milliseconds timeout) = 0;
  // FAILED_PRECONDITION while requests are still pending.
  virtual Status FreeBatch(BatchId batch) = 0;

  // Convenience: allocate, submit, wait, free.
  Status Transfer(std::span<const TransferRequest> requests);
};

}  // namespace crescent::transfer
