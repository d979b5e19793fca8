// The memory a TransferEngine has registered: the regions of its segment.
// Internal to src/transfer. Looked up by local address (our own requests)
// and by segment offset / buffer id (peers' requests served by transports).
//
// Thread safety: all methods are safe to call concurrently. Lookups return
// shared_ptr<const Region>: holding one keeps the region registered-in-use,
// so Remove() can wait for in-flight accesses to end.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "common/status.h"
#include "transfer/segment_descriptor.h"
#include "transfer/transfer_engine.h"

namespace crescent::transfer {

struct Region {
  uint8_t* base = nullptr;
  uint64_t length = 0;          // bytes
  uint64_t segment_offset = 0;
  uint32_t id = 0;              // buffer id in the descriptor, never reused
  int memfd = -1;               // shareable memory (owned by the region), else -1
  bool owned = false;           // allocated by the engine: unmapped on destruction

  ~Region();
  RegisteredRegion Public() const;
};

class MemoryRegistry {
 public:
  // Caller-owned memory.
  StatusOr<RegisteredRegion> Register(void* address, uint64_t length);
  // Engine-owned shareable memory (memfd, MAP_SHARED).
  StatusOr<std::shared_ptr<const Region>> AllocateShareable(uint64_t length);

  // Removes the region starting at `address` and returns it; the caller
  // waits until it is the only holder before reusing the memory.
  // `must_be_owned`: true for FreeSegmentMemory, false for UnregisterMemory.
  StatusOr<std::shared_ptr<const Region>> Remove(void* address, bool must_be_owned);

  // True when [address, address + length) lies inside one region.
  bool ContainsLocal(const void* address, uint64_t length) const;
  // The region holding the segment range, or OUT_OF_RANGE describing the
  // registered ranges.
  StatusOr<std::shared_ptr<const Region>> FindByOffset(uint64_t offset, uint64_t length) const;
  std::shared_ptr<const Region> FindById(uint32_t id) const;

  std::vector<BufferDescriptor> Buffers() const;
  std::vector<RegisteredRegion> Regions() const;

 private:
  StatusOr<RegisteredRegion> Insert(std::shared_ptr<Region> region);

  mutable std::mutex mu_;
  // Guarded by mu_.
  std::map<uintptr_t, std::shared_ptr<Region>> by_address_;
  std::map<uint64_t, std::shared_ptr<Region>> by_offset_;
  uint64_t next_offset_ = 0;
  uint32_t next_id_ = 0;
};

// Waits (polling) until `region` has no holder but the caller.
void WaitUntilUnused(const std::shared_ptr<const Region>& region);

}  // namespace crescent::transfer
