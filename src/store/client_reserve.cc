// Client reservations: the one-round-trip put (MasterCore::Reserve).
//
// The client keeps one current reservation and carves each small
// single-copy value's range out of it with a bump pointer, writes the
// bytes, then publishes the value with one Commit. A reservation is retired
// when it is used up, idle, or near the end of its lease; it is released
// only once every value carved from it was committed or given up, so no
// write can land in space the master has handed to someone else.
#include <algorithm>

#include "common/logging.h"
#include "store/client_internal.h"
#include "store/store_format.h"

namespace crescent::store {
namespace {

// Values above this go the two-round-trip way: their transfer dwarfs a
// round trip, and they would use a reservation up in a few puts.
constexpr uint64_t kMaxReservedValue = 1 << 20;
// A reservation holds about this many values of the size that opened it,
// within these bounds.
constexpr uint64_t kValuesPerReservation = 64;
constexpr uint64_t kMinReservation = 4 << 20;
constexpr uint64_t kMaxReservation = 64 << 20;

uint64_t RoundUp(uint64_t n) { return (n + kAllocAlignment - 1) & ~(kAllocAlignment - 1); }

}  // namespace

std::optional<ClientImpl::Piece> ClientImpl::Carve(uint64_t size) {
  if (!options_.use_reservations) return std::nullopt;
  const uint64_t rounded = RoundUp(size);
  if (rounded > kMaxReservedValue) return std::nullopt;
  std::shared_ptr<Slab> release;
  std::optional<Piece> piece;
  {
    std::lock_guard lock(slab_mu_);
    const int64_t now = NowUs();
    // Stop carving well before the master could take the range back.
    if (slab_ && (slab_->used + rounded > slab_->r.size ||
                  now - slab_->last_use_us > slab_->r.ttl_ms * 1000 / 2)) {
      if (RetireLocked(slab_)) release = slab_;
      slab_.reset();
    }
    if (!slab_ && now >= reserve_retry_us_) {
      const uint64_t want =
          std::clamp(rounded * kValuesPerReservation, kMinReservation, kMaxReservation);
      auto r = master_->Reserve(client_id_, want, rounded,
                                options_.prefer_local_segment && segment_.length > 0
                                    ? segment_name_
                                    : std::string());
      if (r.ok()) {
        slab_ = std::make_shared<Slab>();
        slab_->r = std::move(*r);
        slab_->last_use_us = now;
      } else {
        // Full pool, an old master or no fast port: the two-phase way for
        // a while (longer when the master cannot reserve at all).
        const bool never = r.status().code() == StatusCode::kUnimplemented;
        reserve_retry_us_ = now + (never ? 30'000'000 : 1'000'000);
        spdlog::debug("store client {}: no reservation ({}); putting with PutStart/PutEnd",
                      client_id_, r.status().ToString());
      }
    }
    if (slab_) {
      piece = Piece{slab_, slab_->r.address + slab_->used};
      slab_->used += rounded;
      ++slab_->outstanding;
    }
  }
  if (release) master_->Release(release->r.id).IgnoreError();
  return piece;
}

bool ClientImpl::RetireLocked(const std::shared_ptr<Slab>& slab) {
  if (slab->retired) return false;
  slab->retired = true;
  return slab->outstanding == 0;
}

void ClientImpl::Finish(const std::shared_ptr<Slab>& slab, bool committed, bool dead,
                        bool retire) {
  bool release = false;
  {
    std::lock_guard lock(slab_mu_);
    --slab->outstanding;
    if (committed) slab->last_use_us = NowUs();
    if (dead || retire) {
      slab->retired = true;
      if (slab_ == slab) slab_.reset();
    }
    if (dead) return;  // nothing to release: the master forgot it
    release = slab->retired && slab->outstanding == 0;
  }
  if (release) master_->Release(slab->r.id).IgnoreError();
}

void ClientImpl::RetireSlab(std::chrono::microseconds idle, bool forget) {
  std::shared_ptr<Slab> release;
  {
    std::lock_guard lock(slab_mu_);
    if (!slab_ || NowUs() - slab_->last_use_us < idle.count()) return;
    if (forget) {
      slab_->retired = true;
    } else if (RetireLocked(slab_)) {
      release = slab_;
    }
    slab_.reset();
  }
  if (release) master_->Release(release->r.id).IgnoreError();
}

}  // namespace crescent::store
