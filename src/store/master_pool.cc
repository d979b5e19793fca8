// MasterCore: segments, clients, time (puts reclaimed, clients expired,
// stalls), eviction and introspection.
#include <algorithm>

#include "common/logging.h"
#include "store/master_internal.h"
#include "store/store_format.h"

namespace crescent::store {

using internal::Object;
using internal::Placement;

uint64_t MasterCoreImpl::EvictLocked(uint64_t bytes, int64_t now, const PutStartArgs* retry,
                                     std::vector<Placement>* out) {
  uint64_t freed = 0;
  for (internal::LruList* list : {&lru_, &lru_pinned_}) {
    for (Object* o = list->tail; o != nullptr;) {
      Object* prev = o->lru_prev;
      if (o->lease_until_us <= now) {
        uint64_t bytes_of_o = 0;
        for (const auto& p : o->placements) bytes_of_o += segments_[p.segment].alloc->RoundUp(o->size);
        freed += bytes_of_o;
        ++counters_.evicted_objects;
        counters_.evicted_bytes += bytes_of_o;
        EraseObject(objects_.find(*o->key), /*notify_owners=*/true);
        if (freed >= bytes) {
          if (retry == nullptr) return freed;
          if (TryPlace(*retry, out)) return freed;
        }
      }
      o = prev;
    }
  }
  if (retry != nullptr && out->empty()) TryPlace(*retry, out);
  return freed;
}

void MasterCoreImpl::MaybeEvictAboveWatermark(int64_t now) {
  const double high = options_.eviction_high_watermark_ratio * static_cast<double>(total_bytes_);
  if (static_cast<double>(allocated_bytes_) <= high) return;
  const auto want =
      static_cast<uint64_t>(options_.eviction_ratio * static_cast<double>(total_bytes_));
  EvictLocked(std::max<uint64_t>(want, 1), now, nullptr, nullptr);
}

internal::Client& MasterCoreImpl::TouchClient(std::string_view client_id, int64_t now,
                                              bool* known) {
  auto it = clients_.find(std::string(client_id));
  *known = it != clients_.end();
  if (!*known) it = clients_.emplace(std::string(client_id), internal::Client{}).first;
  it->second.last_ping_us = now;
  return it->second;
}

StatusOr<uint64_t> MasterCoreImpl::MountSegment(std::string_view client_id,
                                                const SegmentSpec& spec,
                                                const std::vector<SegmentObject>& objects) {
  if (client_id.empty()) return InvalidArgumentError("MountSegment: client_id is empty");
  if (spec.name.empty()) return InvalidArgumentError("MountSegment: segment name is empty");
  if (spec.size < kAllocAlignment) {
    return InvalidArgumentError("MountSegment: segment '" + spec.name + "' has " +
                                std::to_string(spec.size) + " bytes; mount at least " +
                                std::to_string(kAllocAlignment));
  }
  std::lock_guard lock(mu_);
  const int64_t now = clock_->NowMicros();
  uint32_t index;
  auto found = segment_index_.find({spec.name, spec.base});
  if (found != segment_index_.end()) {
    index = found->second;
    const auto& seg = segments_[index];
    if (seg.owner != client_id) {
      return AlreadyExistsError("segment '" + spec.name + "' at base " + std::to_string(spec.base) +
                                " is already mounted by client " + seg.owner);
    }
    if (seg.spec.size != spec.size) {
      return InvalidArgumentError("segment '" + spec.name + "' is mounted with " +
                                  std::to_string(seg.spec.size) + " bytes; unmount it first");
    }
  } else {
    index = static_cast<uint32_t>(segments_.size());
    for (uint32_t i = 0; i < segments_.size(); ++i) {
      if (!segments_[i].live) {
        index = i;
        break;
      }
    }
    if (index == segments_.size()) segments_.emplace_back();
    auto& seg = segments_[index];
    seg.spec = spec;
    seg.owner = std::string(client_id);
    seg.live = true;
    seg.alloc = std::make_unique<OffsetAllocator>(spec.size, kAllocAlignment);
    total_bytes_ += seg.alloc->capacity();
    max_segment_bytes_ = std::max(max_segment_bytes_, seg.alloc->capacity());
    segment_index_.emplace(std::make_pair(spec.name, spec.base), index);
    bool known;
    TouchClient(client_id, now, &known).segments.push_back(index);
  }
  bool known;
  TouchClient(client_id, now, &known);

  uint64_t taken = 0;
  auto& seg = segments_[index];
  for (const auto& so : objects) {
    if (so.segment != spec.name || so.base != spec.base || so.size == 0 ||
        !ValidateKey(so.key).ok()) {
      continue;
    }
    auto it = objects_.find(so.key);
    if (it != objects_.end()) {
      Object& o = it->second;
      const bool same = o.complete && o.size == so.size && o.crc32c == so.crc32c;
      const bool here = std::any_of(o.placements.begin(), o.placements.end(),
                                    [&](const Placement& p) { return p.segment == index; });
      if (!same || here || o.placements.size() >= kMaxReplicaNum) continue;
      if (!seg.alloc->AllocateAt(so.offset, so.size)) continue;
      o.placements.push_back({index, so.offset});
    } else {
      if (!seg.alloc->AllocateAt(so.offset, so.size)) continue;
      AddCompleteObject(so.key, so.size, so.crc32c, so.soft_pin, {index, so.offset});
    }
    allocated_bytes_ += seg.alloc->RoundUp(so.size);
    ++taken;
  }
  if (!objects.empty()) {
    spdlog::info("master: client {} mounted segment {}@{:#x} ({} bytes), re-registered {}/{} objects",
                 client_id, spec.name, spec.base, spec.size, taken, objects.size());
  }
  return taken;
}

void MasterCoreImpl::DropSegment(uint32_t index) {
  DropReservationsOn(index);
  auto& seg = segments_[index];
  const uint64_t rounded_unit = kAllocAlignment;
  for (auto it = objects_.begin(); it != objects_.end();) {
    auto next = std::next(it);
    Object& o = it->second;
    auto& ps = o.placements;
    const size_t before = ps.size();
    ps.erase(std::remove_if(ps.begin(), ps.end(),
                            [&](const Placement& p) { return p.segment == index; }),
             ps.end());
    if (ps.size() != before) {
      allocated_bytes_ -= (before - ps.size()) * ((o.size + rounded_unit - 1) & ~(rounded_unit - 1));
      if (ps.empty()) EraseObject(it, /*notify_owners=*/false);
    }
    it = next;
  }
  total_bytes_ -= seg.alloc->capacity();
  segment_index_.erase({seg.spec.name, seg.spec.base});
  auto cit = clients_.find(seg.owner);
  if (cit != clients_.end()) {
    auto& list = cit->second.segments;
    list.erase(std::remove(list.begin(), list.end(), index), list.end());
  }
  seg.live = false;
  seg.alloc.reset();
  seg.owner.clear();
  max_segment_bytes_ = 0;
  for (const auto& s : segments_) {
    if (s.live) max_segment_bytes_ = std::max(max_segment_bytes_, s.alloc->capacity());
  }
}

Status MasterCoreImpl::UnmountSegment(std::string_view client_id, std::string_view name,
                                      uint64_t base) {
  std::lock_guard lock(mu_);
  auto found = segment_index_.find({std::string(name), base});
  if (found == segment_index_.end()) {
    return NotFoundError("segment '" + std::string(name) + "' at base " + std::to_string(base) +
                         " is not mounted");
  }
  if (segments_[found->second].owner != client_id) {
    return FailedPreconditionError("segment '" + std::string(name) + "' belongs to client " +
                                   segments_[found->second].owner + ", not " +
                                   std::string(client_id));
  }
  DropSegment(found->second);
  return OkStatus();
}

std::vector<SegmentEvent> MasterCoreImpl::SnapshotFor(const internal::Client& c) {
  std::vector<SegmentEvent> out;
  for (const auto& [key, o] : objects_) {
    if (!o.complete) continue;
    for (const auto& p : o.placements) {
      if (std::find(c.segments.begin(), c.segments.end(), p.segment) == c.segments.end()) continue;
      const auto& seg = segments_[p.segment];
      out.push_back({true, SegmentObject{seg.spec.name, seg.spec.base, key, p.offset, o.size,
                                         o.crc32c, o.soft_pin}});
    }
  }
  return out;
}

PingResult MasterCoreImpl::Ping(std::string_view client_id) {
  std::lock_guard lock(mu_);
  PingResult result;
  auto& client = TouchClient(client_id, clock_->NowMicros(), &result.known);
  if (!result.known) return result;
  if (client.needs_snapshot) {
    client.needs_snapshot = false;
    result.snapshot = true;
    result.events = SnapshotFor(client);
  } else {
    result.events.swap(client.events);
  }
  return result;
}

void MasterCoreImpl::ReclaimPuts(int64_t now) {
  while (!pending_.empty() && pending_.front().deadline_us <= now) {
    auto entry = std::move(pending_.front());
    pending_.pop_front();
    auto it = objects_.find(entry.key);
    if (it == objects_.end() || it->second.complete || it->second.put_id != entry.put_id) continue;
    spdlog::warn("master: reclaiming put of '{}' not ended within {} ms", entry.key,
                 options_.put_timeout_ms);
    EraseObject(it, /*notify_owners=*/false);
    ++counters_.reclaimed_puts;
  }
}

void MasterCoreImpl::ExpireClients(int64_t now) {
  // Silence is judged only over time the master itself was serving.
  if (now - serving_since_us_ < options_.client_ttl_ms * 1000) return;
  for (auto it = clients_.begin(); it != clients_.end();) {
    auto next = std::next(it);
    if (now - it->second.last_ping_us > options_.client_ttl_ms * 1000) {
      spdlog::warn("master: client {} silent for {} ms; dropping its {} segment(s)", it->first,
                   (now - it->second.last_ping_us) / 1000, it->second.segments.size());
      DropReservationsOf(it->first);
      const auto segs = it->second.segments;
      for (uint32_t index : segs) DropSegment(index);
      clients_.erase(it);
      ++counters_.expired_clients;
    }
    it = next;
  }
}

void MasterCoreImpl::Tick() {
  std::lock_guard lock(mu_);
  const int64_t now = clock_->NowMicros();
  if (now - last_tick_us_ > options_.stall_threshold_ms * 1000) {
    spdlog::warn("master: stalled for {} ms; clients get {} ms to ping before any expires",
                 (now - last_tick_us_) / 1000, options_.client_ttl_ms);
    serving_since_us_ = now;
    ++counters_.stalls;
  }
  last_tick_us_ = now;
  ReclaimPuts(now);
  ReclaimReservations(now);
  ExpireClients(now);
  MaybeEvictAboveWatermark(now);
}

StatusOr<ObjectInfo> MasterCoreImpl::QueryKey(std::string_view key) {
  RETURN_IF_ERROR(ValidateKey(key));
  std::lock_guard lock(mu_);
  auto it = objects_.find(key);
  if (it == objects_.end()) return NotFoundError("key '" + std::string(key) + "' is not in the store");
  const Object& o = it->second;
  ObjectInfo info;
  info.size = o.size;
  info.crc32c = o.crc32c;
  info.soft_pin = o.soft_pin;
  info.complete = o.complete;
  const int64_t now = clock_->NowMicros();
  info.lease_ms = o.lease_until_us > now ? (o.lease_until_us - now) / 1000 : 0;
  for (const auto& p : o.placements) info.replicas.push_back(ToReplica(p));
  return info;
}

std::vector<SegmentInfo> MasterCoreImpl::ListSegments() {
  std::lock_guard lock(mu_);
  std::vector<SegmentInfo> out;
  for (const auto& [name_base, index] : segment_index_) {
    const auto& seg = segments_[index];
    out.push_back({seg.spec, seg.owner, seg.alloc->allocated(), seg.alloc->largest_free(),
                   seg.alloc->free_blocks()});
  }
  return out;
}

std::vector<std::string> MasterCoreImpl::ListKeys(std::string_view prefix, size_t limit) {
  std::vector<std::string> out;
  {
    std::lock_guard lock(mu_);
    for (const auto& [key, o] : objects_) {
      if (o.complete && std::string_view(key).substr(0, prefix.size()) == prefix) {
        out.push_back(key);
      }
    }
  }
  std::sort(out.begin(), out.end());
  if (out.size() > limit) out.resize(limit);
  return out;
}

MasterStats MasterCoreImpl::Stats() {
  std::lock_guard lock(mu_);
  MasterStats s = counters_;
  s.keys = objects_.size() - pending_count_;
  s.pending_puts = pending_count_;
  s.allocated_bytes = allocated_bytes_;
  s.total_bytes = total_bytes_;
  s.segments = segment_index_.size();
  s.clients = clients_.size();
  s.reservations = reservations_.size();
  s.reserved_bytes = reserved_bytes_;
  return s;
}

}  // namespace crescent::store
