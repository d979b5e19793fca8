// OffsetAllocator: hands out byte ranges of one segment.
//
// Best fit over a free list kept twice (by offset, to coalesce neighbours on
// free; by size, to find the smallest block that fits), ties broken by the
// lower address. Best fit with immediate coalescing is among the policies
// with the least fragmentation on real workloads (Johnstone & Wilson, "The
// memory fragmentation problem: solved?", 1998); store_test measures the
// utilisation it reaches under churn (docs/store.md).
//
// Every range is rounded up to `alignment` bytes, so callers free with the
// size they allocated (the rounding is deterministic).
//
// Thread safety: none; the master serialises access.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <utility>

namespace crescent::store {

class OffsetAllocator {
 public:
  // Manages [0, capacity). alignment must be a power of two.
  OffsetAllocator(uint64_t capacity, uint64_t alignment);

  // The offset of a free range of RoundUp(size) bytes, or nullopt when no
  // free block is large enough. size must be > 0.
  std::optional<uint64_t> Allocate(uint64_t size);

  // Marks [offset, offset + RoundUp(size)) allocated if all of it is free
  // (used to re-register objects after a master restart); false otherwise.
  bool AllocateAt(uint64_t offset, uint64_t size);

  // Returns a range from Allocate/AllocateAt (same size argument).
  void Free(uint64_t offset, uint64_t size);

  uint64_t RoundUp(uint64_t size) const { return (size + alignment_ - 1) & ~(alignment_ - 1); }
  uint64_t capacity() const { return capacity_; }
  uint64_t allocated() const { return allocated_; }
  uint64_t largest_free() const;
  size_t free_blocks() const { return by_offset_.size(); }

 private:
  void InsertFree(uint64_t offset, uint64_t size);
  void EraseFree(std::map<uint64_t, uint64_t>::iterator it);

  const uint64_t capacity_;
  const uint64_t alignment_;
  uint64_t allocated_ = 0;
  std::map<uint64_t, uint64_t> by_offset_;          // offset -> size
  std::set<std::pair<uint64_t, uint64_t>> by_size_;  // (size, offset)
};

}  // namespace crescent::store
