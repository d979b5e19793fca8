#include "store/offset_allocator.h"

#include <cassert>
#include <iterator>

namespace crescent::store {

OffsetAllocator::OffsetAllocator(uint64_t capacity, uint64_t alignment)
    : capacity_(capacity & ~(alignment - 1)), alignment_(alignment) {
  assert(alignment != 0 && (alignment & (alignment - 1)) == 0);
  if (capacity_ > 0) InsertFree(0, capacity_);
}

void OffsetAllocator::InsertFree(uint64_t offset, uint64_t size) {
  by_offset_.emplace(offset, size);
  by_size_.emplace(size, offset);
}

void OffsetAllocator::EraseFree(std::map<uint64_t, uint64_t>::iterator it) {
  by_size_.erase({it->second, it->first});
  by_offset_.erase(it);
}

std::optional<uint64_t> OffsetAllocator::Allocate(uint64_t size) {
  if (size == 0) return std::nullopt;
  const uint64_t need = RoundUp(size);
  if (need < size) return std::nullopt;  // overflow
  auto fit = by_size_.lower_bound({need, 0});
  if (fit == by_size_.end()) return std::nullopt;
  const auto [block_size, offset] = *fit;
  by_size_.erase(fit);
  by_offset_.erase(offset);
  if (block_size > need) InsertFree(offset + need, block_size - need);
  allocated_ += need;
  return offset;
}

bool OffsetAllocator::AllocateAt(uint64_t offset, uint64_t size) {
  const uint64_t need = RoundUp(size);
  if (size == 0 || (offset & (alignment_ - 1)) != 0 || offset > capacity_ ||
      need > capacity_ - offset) {
    return false;
  }
  auto it = by_offset_.upper_bound(offset);
  if (it == by_offset_.begin()) return false;
  --it;  // the free block starting at or before offset
  const uint64_t start = it->first, len = it->second;
  if (offset + need > start + len) return false;
  EraseFree(it);
  if (offset > start) InsertFree(start, offset - start);
  if (start + len > offset + need) InsertFree(offset + need, start + len - offset - need);
  allocated_ += need;
  return true;
}

void OffsetAllocator::Free(uint64_t offset, uint64_t size) {
  uint64_t start = offset, len = RoundUp(size);
  allocated_ -= len;
  auto next = by_offset_.lower_bound(offset);
  if (next != by_offset_.end() && next->first == start + len) {
    len += next->second;
    auto after = std::next(next);
    EraseFree(next);
    next = after;
  }
  if (next != by_offset_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      len += prev->second;
      EraseFree(prev);
    }
  }
  InsertFree(start, len);
}

uint64_t OffsetAllocator::largest_free() const {
  return by_size_.empty() ? 0 : by_size_.rbegin()->first;
}

}  // namespace crescent::store
