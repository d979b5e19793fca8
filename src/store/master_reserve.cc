// MasterCore: reservations, the one-round-trip put of single-copy values.
//
// A reservation is an ordinary allocation owned by one client instead of
// one object. Commit turns a piece of it into a complete object: the piece
// leaves the reservation and from then on is freed like any object's range
// (OffsetAllocator::Free takes any allocated range, so an object may free
// its piece while the rest of the reservation is still in use). When the
// reservation ends, the gaps between its committed pieces are freed.
#include <algorithm>
#include <random>

#include "common/logging.h"
#include "store/master_internal.h"
#include "store/store_format.h"

namespace crescent::store {

using internal::Object;
using internal::Placement;
using internal::ReservationState;

StatusOr<Reservation> MasterCoreImpl::Reserve(std::string_view client_id, uint64_t size,
                                              uint64_t min_size,
                                              std::string_view preferred_segment) {
  if (client_id.empty()) return InvalidArgumentError("Reserve: client_id is empty");
  if (min_size == 0 || size < min_size) {
    return InvalidArgumentError("Reserve: want 1 <= min_size <= size, got min_size " +
                                std::to_string(min_size) + " and size " + std::to_string(size));
  }
  std::lock_guard lock(mu_);
  const int64_t now = clock_->NowMicros();
  if (min_size > max_segment_bytes_) {
    return ResourceExhaustedError("Reserve: " + std::to_string(min_size) +
                                  " bytes is larger than every segment (largest: " +
                                  std::to_string(max_segment_bytes_) + " bytes)");
  }
  // A reservation must not starve other writers of a small pool.
  const uint64_t grant = std::max(min_size, std::min(size, total_bytes_ / 32));
  PutStartArgs args;
  args.size = grant;
  args.replica_num = 1;
  args.preferred_segment = std::string(preferred_segment);
  std::vector<Placement> placements;
  if (!TryPlace(args, &placements) && grant > min_size) {
    args.size = min_size;
    TryPlace(args, &placements);
  }
  if (placements.empty()) {
    const uint64_t want = std::max<uint64_t>(
        static_cast<uint64_t>(options_.eviction_ratio * static_cast<double>(total_bytes_)),
        min_size);
    EvictLocked(want, now, &args, &placements);
    if (placements.empty()) {
      return ResourceExhaustedError("Reserve: no room for " + std::to_string(min_size) +
                                    " bytes even after eviction");
    }
  }
  const Placement& p = placements[0];
  auto& seg = segments_[p.segment];
  uint64_t id = 0;
  while (id == 0 || reservations_.count(id)) id = reservation_ids_();
  ReservationState& r = reservations_[id];
  r.client_id = std::string(client_id);
  r.segment = p.segment;
  r.offset = p.offset;
  r.size = seg.alloc->RoundUp(args.size);
  r.deadline_us = now + options_.put_timeout_ms * 1000;
  allocated_bytes_ += r.size;
  reserved_bytes_ += r.size;
  MaybeEvictAboveWatermark(now);
  return Reservation{id, seg.spec.name, seg.spec.base + r.offset, r.size, options_.put_timeout_ms};
}

Status MasterCoreImpl::CommitLocked(const CommitArgs& a, int64_t now) {
  RETURN_IF_ERROR(ValidateKey(a.key));
  if (a.size < kMinValueSize) {
    return InvalidArgumentError("value of key '" + a.key + "' is empty; values hold >= 1 byte");
  }
  auto rit = reservations_.find(a.reservation);
  if (rit == reservations_.end()) {
    return FailedPreconditionError("reservation " + std::to_string(a.reservation) +
                                   " is unknown (released, unused for put_timeout, its segment "
                                   "left, or the master restarted); put without it");
  }
  ReservationState& r = rit->second;
  const auto& seg = segments_[r.segment];
  const uint64_t rounded = seg.alloc->RoundUp(a.size);
  const uint64_t begin = seg.spec.base + r.offset;
  if (a.address < begin || a.address % kAllocAlignment != 0 || a.address - begin > r.size ||
      rounded > r.size - (a.address - begin)) {
    return FailedPreconditionError("commit of key '" + a.key + "': " + std::to_string(a.size) +
                                   " bytes at " + std::to_string(a.address) +
                                   " are not an aligned range inside reservation " +
                                   std::to_string(a.reservation));
  }
  const uint64_t offset = a.address - seg.spec.base;
  auto next = r.committed.lower_bound(offset);
  const bool overlaps =
      (next != r.committed.end() && next->first < offset + rounded) ||
      (next != r.committed.begin() && std::prev(next)->first + std::prev(next)->second > offset);
  if (overlaps) {
    return FailedPreconditionError("commit of key '" + a.key +
                                   "' overlaps a value already committed in reservation " +
                                   std::to_string(a.reservation));
  }
  if (auto found = objects_.find(a.key); found != objects_.end()) {
    return AlreadyExistsError("key '" + a.key + "' " +
                              (found->second.complete ? "is already stored" : "is being written") +
                              "; remove it first or use another key");
  }
  r.committed.emplace(offset, rounded);
  r.committed_bytes += rounded;
  r.deadline_us = now + options_.put_timeout_ms * 1000;
  reserved_bytes_ -= rounded;
  const Object& o = AddCompleteObject(a.key, a.size, a.crc32c, a.soft_pin, {r.segment, offset});
  Notify(o, o.placements[0], /*added=*/true);
  return OkStatus();
}

std::vector<Status> MasterCoreImpl::BatchCommit(const std::vector<CommitArgs>& items) {
  std::vector<Status> out;
  out.reserve(items.size());
  std::lock_guard lock(mu_);
  const int64_t now = clock_->NowMicros();
  for (const auto& a : items) out.push_back(CommitLocked(a, now));
  return out;
}

Status MasterCoreImpl::Release(uint64_t reservation) {
  std::lock_guard lock(mu_);
  auto it = reservations_.find(reservation);
  if (it == reservations_.end()) {
    return NotFoundError("reservation " + std::to_string(reservation) + " is unknown");
  }
  EndReservation(it);
  return OkStatus();
}

void MasterCoreImpl::EndReservation(
    std::unordered_map<uint64_t, ReservationState>::iterator it) {
  ReservationState& r = it->second;
  auto& seg = segments_[r.segment];
  const uint64_t uncommitted = r.size - r.committed_bytes;
  uint64_t at = r.offset;
  auto free_gap = [&](uint64_t end) {
    if (end > at) seg.alloc->Free(at, end - at);
  };
  for (const auto& [offset, size] : r.committed) {
    free_gap(offset);
    at = offset + size;
  }
  free_gap(r.offset + r.size);
  allocated_bytes_ -= uncommitted;
  reserved_bytes_ -= uncommitted;
  reservations_.erase(it);
}

void MasterCoreImpl::ReclaimReservations(int64_t now) {
  for (auto it = reservations_.begin(); it != reservations_.end();) {
    auto next = std::next(it);
    if (it->second.deadline_us <= now) {
      spdlog::warn("master: reclaiming reservation of client {} unused for {} ms",
                   it->second.client_id, options_.put_timeout_ms);
      EndReservation(it);
    }
    it = next;
  }
}

void MasterCoreImpl::DropReservationsOn(uint32_t index) {
  for (auto it = reservations_.begin(); it != reservations_.end();) {
    auto next = std::next(it);
    if (it->second.segment == index) {
      // The segment's allocator goes with it; only the counters change.
      const uint64_t uncommitted = it->second.size - it->second.committed_bytes;
      allocated_bytes_ -= uncommitted;
      reserved_bytes_ -= uncommitted;
      reservations_.erase(it);
    }
    it = next;
  }
}

void MasterCoreImpl::DropReservationsOf(const std::string& client_id) {
  for (auto it = reservations_.begin(); it != reservations_.end();) {
    auto next = std::next(it);
    if (it->second.client_id == client_id) EndReservation(it);
    it = next;
  }
}

}  // namespace crescent::store
