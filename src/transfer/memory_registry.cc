#include "transfer/memory_registry.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "common/size.h"
#include "fmt/format.h"
#include "transfer/transfer_format.h"

namespace crescent::transfer {

Region::~Region() {
  if (owned && base) ::munmap(base, length);
  if (memfd >= 0) ::close(memfd);
}

RegisteredRegion Region::Public() const {
  return RegisteredRegion{base, segment_offset, length, memfd >= 0};
}

StatusOr<RegisteredRegion> MemoryRegistry::Register(void* address, uint64_t length) {
  if (!address || length == 0)
    return InvalidArgumentError("RegisterMemory: address is null or length is 0");
  auto r = std::make_shared<Region>();
  r->base = static_cast<uint8_t*>(address);
  r->length = length;
  return Insert(std::move(r));
}

StatusOr<std::shared_ptr<const Region>> MemoryRegistry::AllocateShareable(uint64_t length) {
  if (length == 0) return InvalidArgumentError("AllocateSegmentMemory: length is 0");
  auto r = std::make_shared<Region>();
  r->memfd = ::memfd_create("crescent-segment", MFD_CLOEXEC);
  if (r->memfd < 0) return ErrnoToStatus(errno, "memfd_create for segment memory");
  if (::ftruncate(r->memfd, static_cast<off_t>(length)) != 0)
    return ErrnoToStatus(errno, fmt::format("sizing segment memory to {}", FormatSize(length)));
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->memfd, 0);
  if (p == MAP_FAILED)
    return ErrnoToStatus(errno, fmt::format("mapping {} of segment memory", FormatSize(length)));
  r->base = static_cast<uint8_t*>(p);
  r->length = length;
  r->owned = true;
  std::shared_ptr<const Region> out = r;
  RETURN_IF_ERROR(Insert(std::move(r)).status());
  return out;
}

StatusOr<RegisteredRegion> MemoryRegistry::Insert(std::shared_ptr<Region> r) {
  std::lock_guard lock(mu_);
  uintptr_t begin = reinterpret_cast<uintptr_t>(r->base);
  auto next = by_address_.lower_bound(begin);
  if (next != by_address_.end() && next->first < begin + r->length)
    return AlreadyExistsError(fmt::format(
        "memory at {} (+{}) overlaps the registered region at {:#x}; unregister it first",
        static_cast<void*>(r->base), r->length, next->first));
  if (next != by_address_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second->length > begin)
      return AlreadyExistsError(fmt::format(
          "memory at {} overlaps the registered region at {:#x} (+{}); unregister it first",
          static_cast<void*>(r->base), prev->first, prev->second->length));
  }
  if (r->memfd >= 0 && next_id_ >= format::kShmMaxBuffers)
    return ResourceExhaustedError(fmt::format(
        "this engine has allocated {} shared buffers, the most one engine instance can; "
        "allocate fewer, larger regions",
        format::kShmMaxBuffers));
  r->id = next_id_++;
  r->segment_offset = next_offset_;
  uint64_t a = format::kSegmentOffsetAlignment;
  next_offset_ += (r->length + a - 1) / a * a;
  by_address_[begin] = r;
  by_offset_[r->segment_offset] = r;
  return r->Public();
}

StatusOr<std::shared_ptr<const Region>> MemoryRegistry::Remove(void* address, bool must_be_owned) {
  std::lock_guard lock(mu_);
  auto it = by_address_.find(reinterpret_cast<uintptr_t>(address));
  if (it == by_address_.end())
    return NotFoundError(fmt::format("no registered region starts at {}", address));
  if (it->second->owned != must_be_owned)
    return InvalidArgumentError(
        must_be_owned ? fmt::format("{} was registered with RegisterMemory; use UnregisterMemory",
                                    address)
                      : fmt::format("{} came from AllocateSegmentMemory; use FreeSegmentMemory",
                                    address));
  std::shared_ptr<const Region> r = it->second;
  by_offset_.erase(r->segment_offset);
  by_address_.erase(it);
  return r;
}

bool MemoryRegistry::ContainsLocal(const void* address, uint64_t length) const {
  uintptr_t p = reinterpret_cast<uintptr_t>(address);
  std::lock_guard lock(mu_);
  auto it = by_address_.upper_bound(p);
  if (it == by_address_.begin()) return false;
  --it;
  uint64_t skip = p - it->first;
  return skip <= it->second->length && length <= it->second->length - skip;
}

StatusOr<std::shared_ptr<const Region>> MemoryRegistry::FindByOffset(uint64_t offset,
                                                                    uint64_t length) const {
  std::lock_guard lock(mu_);
  auto it = by_offset_.upper_bound(offset);
  if (it != by_offset_.begin()) {
    --it;
    uint64_t skip = offset - it->first;
    if (skip <= it->second->length && length <= it->second->length - skip) return {it->second};
  }
  std::string ranges;
  for (const auto& [o, r] : by_offset_) {
    if (ranges.size() > 200) { ranges += " ..."; break; }
    ranges += fmt::format(" [{}, {})", o, o + r->length);
  }
  return OutOfRangeError(fmt::format("segment range [{}, {}) is not inside one registered region "
                                     "(registered:{})",
                                     offset, offset + length, ranges.empty() ? " none" : ranges));
}

std::shared_ptr<const Region> MemoryRegistry::FindById(uint32_t id) const {
  std::lock_guard lock(mu_);
  for (const auto& [o, r] : by_offset_)
    if (r->id == id) return r;
  return nullptr;
}

std::vector<BufferDescriptor> MemoryRegistry::Buffers() const {
  std::lock_guard lock(mu_);
  std::vector<BufferDescriptor> out;
  for (const auto& [o, r] : by_offset_) out.push_back({r->id, o, r->length, r->memfd >= 0});
  return out;
}

std::vector<RegisteredRegion> MemoryRegistry::Regions() const {
  std::lock_guard lock(mu_);
  std::vector<RegisteredRegion> out;
  for (const auto& [o, r] : by_offset_) out.push_back(r->Public());
  return out;
}

void WaitUntilUnused(const std::shared_ptr<const Region>& region) {
  while (region.use_count() > 1) std::this_thread::sleep_for(std::chrono::microseconds(200));
}

}  // namespace crescent::transfer
