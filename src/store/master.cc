// MasterCore: puts, gets, removal and batch forms. Segments, clients, time
// and eviction are in master_pool.cc.
#include <algorithm>
#include <chrono>
#include <random>

#include "common/logging.h"
#include "store/master_internal.h"
#include "store/store_format.h"

namespace crescent::store {

using internal::Object;
using internal::Placement;

namespace {
class SteadyClock : public Clock {
 public:
  int64_t NowMicros() const override {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};
}  // namespace

Clock* SystemClock() {
  static SteadyClock* clock = new SteadyClock();
  return clock;
}

Status ValidateKey(std::string_view key) {
  if (key.empty()) return InvalidArgumentError("key is empty; use 1 to 4096 bytes");
  if (key.size() > kMaxKeyLength) {
    return InvalidArgumentError("key is " + std::to_string(key.size()) +
                                " bytes; the limit is " + std::to_string(kMaxKeyLength));
  }
  if (key.find('\0') != std::string_view::npos) {
    return InvalidArgumentError("key contains a NUL byte; keys may hold any byte but NUL");
  }
  return OkStatus();
}

namespace internal {
void LruList::PushFront(Object* o) {
  o->lru_prev = nullptr;
  o->lru_next = head;
  if (head) head->lru_prev = o;
  head = o;
  if (!tail) tail = o;
}

void LruList::Unlink(Object* o) {
  if (o->lru_prev) o->lru_prev->lru_next = o->lru_next; else head = o->lru_next;
  if (o->lru_next) o->lru_next->lru_prev = o->lru_prev; else tail = o->lru_prev;
  o->lru_prev = o->lru_next = nullptr;
}
}  // namespace internal

std::unique_ptr<MasterCore> MasterCore::Create(const MasterOptions& options, Clock* clock) {
  return std::make_unique<MasterCoreImpl>(options, clock);
}

MasterCoreImpl::MasterCoreImpl(const MasterOptions& options, Clock* clock)
    : options_(options), clock_(clock), reservation_ids_(std::random_device{}()) {
  last_tick_us_ = serving_since_us_ = clock_->NowMicros();
}

Replica MasterCoreImpl::ToReplica(const Placement& p) const {
  const auto& seg = segments_[p.segment];
  return Replica{seg.spec.name, seg.spec.base + p.offset};
}

StatusOr<std::vector<Replica>> MasterCoreImpl::PutStartLocked(const PutStartArgs& args,
                                                              int64_t now) {
  RETURN_IF_ERROR(ValidateKey(args.key));
  if (args.size < kMinValueSize) {
    return InvalidArgumentError("value of key '" + args.key + "' is empty; values hold >= 1 byte");
  }
  if (args.replica_num == 0 || args.replica_num > kMaxReplicaNum) {
    return InvalidArgumentError("replica_num " + std::to_string(args.replica_num) +
                                " is out of range; use 1 to " + std::to_string(kMaxReplicaNum));
  }
  auto found = objects_.find(args.key);
  if (found != objects_.end()) {
    return AlreadyExistsError("key '" + args.key + "' " +
                              (found->second.complete ? "is already stored" : "is being written") +
                              "; remove it first or use another key");
  }
  if (args.size > max_segment_bytes_) {
    return ResourceExhaustedError(
        "value of " + std::to_string(args.size) + " bytes is larger than every segment (largest: " +
        std::to_string(max_segment_bytes_) + " bytes); mount a larger global_segment_size");
  }
  std::vector<Placement> placements;
  if (!TryPlace(args, &placements)) {
    const uint64_t want = std::max<uint64_t>(
        static_cast<uint64_t>(options_.eviction_ratio * static_cast<double>(total_bytes_)),
        args.size * args.replica_num);
    EvictLocked(want, now, &args, &placements);
    if (placements.empty()) {
      return ResourceExhaustedError(
          "no room for " + std::to_string(args.size) + " bytes x " +
          std::to_string(args.replica_num) + " replica(s) of key '" + args.key +
          "': every evictable object is gone and the rest are leased, being written, or there "
          "are fewer live segments than replicas; mount more memory or retry later");
    }
  }
  auto [it, inserted] = objects_.try_emplace(args.key);
  Object& o = it->second;
  o.key = &it->first;
  o.size = args.size;
  o.soft_pin = args.soft_pin;
  o.put_id = next_put_id_++;
  o.placements = std::move(placements);
  for (const auto& p : o.placements) {
    allocated_bytes_ += segments_[p.segment].alloc->RoundUp(o.size);
  }
  ++pending_count_;
  pending_.push_back({now + options_.put_timeout_ms * 1000, o.put_id, args.key});
  std::vector<Replica> out;
  out.reserve(o.placements.size());
  for (const auto& p : o.placements) out.push_back(ToReplica(p));
  MaybeEvictAboveWatermark(now);
  return out;
}

bool MasterCoreImpl::TryPlace(const PutStartArgs& args, std::vector<Placement>* out) {
  out->clear();
  std::vector<uint32_t> used;
  auto take = [&](uint32_t index) {
    auto& seg = segments_[index];
    if (!seg.live || std::find(used.begin(), used.end(), index) != used.end()) return false;
    auto offset = seg.alloc->Allocate(args.size);
    if (!offset) return false;
    used.push_back(index);
    out->push_back({index, *offset});
    return true;
  };
  if (!args.preferred_segment.empty()) {
    auto it = segment_index_.lower_bound({args.preferred_segment, 0});
    for (; it != segment_index_.end() && it->first.first == args.preferred_segment; ++it) {
      if (take(it->second)) break;
    }
  }
  // The rest go to the segments with the most free bytes, which keeps the
  // pool balanced and leaves large holes for large values.
  while (out->size() < args.replica_num) {
    int64_t best = -1;
    uint64_t best_free = 0;
    for (uint32_t i = 0; i < segments_.size(); ++i) {
      const auto& seg = segments_[i];
      if (!seg.live || std::find(used.begin(), used.end(), i) != used.end()) continue;
      if (seg.alloc->largest_free() < seg.alloc->RoundUp(args.size)) continue;
      const uint64_t free = seg.alloc->capacity() - seg.alloc->allocated();
      if (best < 0 || free > best_free) {
        best = i;
        best_free = free;
      }
    }
    if (best < 0 || !take(static_cast<uint32_t>(best))) break;
  }
  if (out->size() < args.replica_num) {
    for (const auto& p : *out) segments_[p.segment].alloc->Free(p.offset, args.size);
    out->clear();
    return false;
  }
  return true;
}

Status MasterCoreImpl::PutEndLocked(std::string_view key, uint32_t crc32c) {
  auto it = objects_.find(key);
  if (it == objects_.end()) {
    return NotFoundError("no put in progress for key '" + std::string(key) +
                         "': it was revoked, reclaimed after put_timeout, or its segment left");
  }
  Object& o = it->second;
  if (o.complete) return AlreadyExistsError("key '" + std::string(key) + "' is already stored");
  o.complete = true;
  o.crc32c = crc32c;
  --pending_count_;
  (o.soft_pin ? lru_pinned_ : lru_).PushFront(&o);
  for (const auto& p : o.placements) Notify(o, p, /*added=*/true);
  return OkStatus();
}

Status MasterCoreImpl::PutRevokeLocked(std::string_view key) {
  auto it = objects_.find(key);
  if (it == objects_.end()) {
    return NotFoundError("no put in progress for key '" + std::string(key) + "'");
  }
  if (it->second.complete) {
    return FailedPreconditionError("key '" + std::string(key) +
                                   "' is already published; use Remove");
  }
  EraseObject(it, /*notify_owners=*/false);
  return OkStatus();
}

StatusOr<ObjectInfo> MasterCoreImpl::GetLocked(std::string_view key, int64_t now) {
  auto it = objects_.find(key);
  if (it == objects_.end() || !it->second.complete) {
    return NotFoundError("key '" + std::string(key) + "' is not in the store");
  }
  Object& o = it->second;
  o.lease_until_us = std::max(o.lease_until_us, now + options_.default_kv_lease_ttl_ms * 1000);
  (o.soft_pin ? lru_pinned_ : lru_).Touch(&o);
  ObjectInfo info;
  info.size = o.size;
  info.crc32c = o.crc32c;
  info.soft_pin = o.soft_pin;
  info.complete = true;
  info.lease_ms = options_.default_kv_lease_ttl_ms;
  info.replicas.reserve(o.placements.size());
  for (const auto& p : o.placements) info.replicas.push_back(ToReplica(p));
  return info;
}

Status MasterCoreImpl::RemoveLocked(std::string_view key, int64_t now) {
  auto it = objects_.find(key);
  if (it == objects_.end()) return NotFoundError("key '" + std::string(key) + "' is not in the store");
  if (!it->second.complete) {
    return FailedPreconditionError("key '" + std::string(key) +
                                   "' is being written; PutRevoke it or wait for PutEnd");
  }
  if (it->second.lease_until_us > now) {
    return FailedPreconditionError(
        "key '" + std::string(key) + "' is under a read lease for another " +
        std::to_string((it->second.lease_until_us - now + 999) / 1000) + " ms; retry after it");
  }
  EraseObject(it, /*notify_owners=*/true);
  return OkStatus();
}

internal::Object& MasterCoreImpl::AddCompleteObject(std::string_view key, uint64_t size,
                                                    uint32_t crc32c, bool soft_pin,
                                                    internal::Placement placement) {
  auto [it, inserted] = objects_.try_emplace(std::string(key));
  Object& o = it->second;
  o.key = &it->first;
  o.size = size;
  o.crc32c = crc32c;
  o.soft_pin = soft_pin;
  o.complete = true;
  o.put_id = next_put_id_++;
  o.placements.push_back(placement);
  (o.soft_pin ? lru_pinned_ : lru_).PushFront(&o);
  return o;
}

void MasterCoreImpl::EraseObject(ObjectMap::iterator it, bool notify_owners) {
  Object& o = it->second;
  for (const auto& p : o.placements) {
    auto& seg = segments_[p.segment];
    if (!seg.live) continue;
    if (notify_owners && o.complete) Notify(o, p, /*added=*/false);
    allocated_bytes_ -= seg.alloc->RoundUp(o.size);
    seg.alloc->Free(p.offset, o.size);
  }
  if (o.complete) {
    (o.soft_pin ? lru_pinned_ : lru_).Unlink(&o);
  } else {
    --pending_count_;
  }
  objects_.erase(it);
}

void MasterCoreImpl::Notify(const Object& o, const Placement& p, bool added) {
  const auto& seg = segments_[p.segment];
  auto cit = clients_.find(seg.owner);
  if (cit == clients_.end()) return;
  auto& client = cit->second;
  if (client.needs_snapshot) return;
  if (client.events.size() >= options_.max_events_per_client) {
    client.events.clear();
    client.events.shrink_to_fit();
    client.needs_snapshot = true;
    return;
  }
  client.events.push_back(SegmentEvent{
      added, SegmentObject{seg.spec.name, seg.spec.base, *o.key, p.offset, o.size, o.crc32c,
                           o.soft_pin}});
}

// ---- Public forms: lock, then the Locked variant ----

StatusOr<std::vector<Replica>> MasterCoreImpl::PutStart(const PutStartArgs& args) {
  std::lock_guard lock(mu_);
  return PutStartLocked(args, clock_->NowMicros());
}

Status MasterCoreImpl::PutEnd(std::string_view key, uint32_t crc32c) {
  std::lock_guard lock(mu_);
  return PutEndLocked(key, crc32c);
}

Status MasterCoreImpl::PutRevoke(std::string_view key) {
  std::lock_guard lock(mu_);
  return PutRevokeLocked(key);
}

StatusOr<ObjectInfo> MasterCoreImpl::GetReplicaList(std::string_view key) {
  std::lock_guard lock(mu_);
  return GetLocked(key, clock_->NowMicros());
}

StatusOr<bool> MasterCoreImpl::Exist(std::string_view key) {
  RETURN_IF_ERROR(ValidateKey(key));
  std::lock_guard lock(mu_);
  auto it = objects_.find(key);
  return it != objects_.end() && it->second.complete;
}

Status MasterCoreImpl::Remove(std::string_view key) {
  std::lock_guard lock(mu_);
  return RemoveLocked(key, clock_->NowMicros());
}

uint64_t MasterCoreImpl::RemoveAll() {
  std::lock_guard lock(mu_);
  const int64_t now = clock_->NowMicros();
  uint64_t removed = 0;
  for (auto it = objects_.begin(); it != objects_.end();) {
    auto next = std::next(it);
    if (it->second.complete && it->second.lease_until_us <= now) {
      EraseObject(it, /*notify_owners=*/true);
      ++removed;
    }
    it = next;
  }
  return removed;
}

std::vector<StatusOr<std::vector<Replica>>> MasterCoreImpl::BatchPutStart(
    const std::vector<PutStartArgs>& items) {
  std::vector<StatusOr<std::vector<Replica>>> out;
  out.reserve(items.size());
  std::lock_guard lock(mu_);
  const int64_t now = clock_->NowMicros();
  for (const auto& item : items) out.push_back(PutStartLocked(item, now));
  return out;
}

std::vector<Status> MasterCoreImpl::BatchPutEnd(const std::vector<std::string>& keys,
                                                const std::vector<uint32_t>& crcs) {
  std::vector<Status> out;
  out.reserve(keys.size());
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < keys.size(); ++i) {
    out.push_back(i < crcs.size() ? PutEndLocked(keys[i], crcs[i])
                                  : InvalidArgumentError("BatchPutEnd: fewer checksums than keys"));
  }
  return out;
}

std::vector<Status> MasterCoreImpl::BatchPutRevoke(const std::vector<std::string>& keys) {
  std::vector<Status> out;
  out.reserve(keys.size());
  std::lock_guard lock(mu_);
  for (const auto& key : keys) out.push_back(PutRevokeLocked(key));
  return out;
}

std::vector<StatusOr<ObjectInfo>> MasterCoreImpl::BatchGetReplicaList(
    const std::vector<std::string>& keys) {
  std::vector<StatusOr<ObjectInfo>> out;
  out.reserve(keys.size());
  std::lock_guard lock(mu_);
  const int64_t now = clock_->NowMicros();
  for (const auto& key : keys) out.push_back(GetLocked(key, now));
  return out;
}

std::vector<StatusOr<bool>> MasterCoreImpl::BatchExist(const std::vector<std::string>& keys) {
  std::vector<StatusOr<bool>> out;
  out.reserve(keys.size());
  std::lock_guard lock(mu_);
  for (const auto& key : keys) {
    if (Status s = ValidateKey(key); !s.ok()) {
      out.push_back(s);
      continue;
    }
    auto it = objects_.find(key);
    out.push_back(it != objects_.end() && it->second.complete);
  }
  return out;
}

std::vector<Status> MasterCoreImpl::BatchRemove(const std::vector<std::string>& keys) {
  std::vector<Status> out;
  out.reserve(keys.size());
  std::lock_guard lock(mu_);
  const int64_t now = clock_->NowMicros();
  for (const auto& key : keys) out.push_back(RemoveLocked(key, now));
  return out;
}

}  // namespace crescent::store
