// One interface per thing that varies: a Transport moves slices of requests
// to a peer segment (tcp, shared memory; an ibverbs transport would be a
// third implementation). Internal to src/transfer: users see only
// TransferEngine.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "common/status.h"
#include "transfer/memory_registry.h"
#include "transfer/segment_descriptor.h"
#include "transfer/transfer_engine.h"

namespace crescent::transfer {

class Batch;

// A piece of one request. Completed exactly once through Complete().
struct Slice {
  OpCode opcode = OpCode::kRead;
  uint8_t* local = nullptr;
  uint64_t remote_offset = 0;  // segment offset
  uint64_t length = 0;         // bytes
  uint32_t buffer_id = 0;      // remote buffer holding the range
  uint64_t buffer_offset = 0;  // segment offset where that buffer starts
  std::chrono::steady_clock::time_point deadline;
  Batch* batch = nullptr;      // outlives the slice (FreeBatch waits for it)
  uint32_t request_index = 0;
  // In-process copies (max_slice_bytes() == UINT64_MAX) only: store the
  // CRC-32C of the bytes copied here before completing.
  uint32_t* crc32c = nullptr;

  void Complete(const Status& status) const;
};

// A path to one peer segment, created by Transport::Connect.
// Thread safety: Submit may be called concurrently.
class Channel {
 public:
  // Fails slices still queued (CANCELLED) and waits for those in flight.
  virtual ~Channel() = default;
  // Slices longer than this are split by the engine.
  virtual uint64_t max_slice_bytes() const = 0;
  // Takes the slices; completes each, possibly before returning.
  virtual void Submit(std::span<const Slice> slices) = 0;
};

// Static facts about our own segment that servers need.
struct LocalSegment {
  std::string name;
  uint64_t instance = 0;
  MemoryRegistry* registry = nullptr;  // outlives the transport
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::string_view name() const = 0;
  // Target side: serve peers' requests against `local`; writes the fields
  // peers need (tcp_port, shm_socket) into *desc.
  virtual Status Serve(const LocalSegment& local, SegmentDescriptor* desc) = 0;
  // A region was added: peers may reach it.
  virtual void Expose(const Region& region) {}
  // A region is being removed: peers must stop reaching it.
  virtual void Revoke(const Region& region) {}
  // Initiator side: whether `desc` can be reached this way at all.
  virtual bool CanReach(const SegmentDescriptor& desc) const = 0;
  virtual StatusOr<std::unique_ptr<Channel>> Connect(const SegmentDescriptor& desc) = 0;
};

std::unique_ptr<Transport> NewTcpTransport(const TransferEngineOptions& options);
std::unique_ptr<Transport> NewShmTransport(const TransferEngineOptions& options);
// Our own segment: memcpy within the process, checked against the registry.
std::unique_ptr<Channel> NewLocalChannel(MemoryRegistry* registry);

}  // namespace crescent::transfer
