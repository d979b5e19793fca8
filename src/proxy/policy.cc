#include "proxy/policy.h"

#include <fmt/format.h>

#include <limits>
#include <list>
#include <unordered_map>

namespace crescent::proxy {
namespace {

class RoundRobin final : public Policy {
 public:
  size_t Choose(const std::vector<Candidate>& c, const RequestInfo&) override {
    return next_++ % c.size();
  }
  std::string_view name() const override { return "round_robin"; }

 private:
  uint64_t next_ = 0;
};

// Least in-flight tokens, then least requests; ties rotate so that an idle
// cluster still spreads requests.
size_t LeastLoadedIndex(const std::vector<Candidate>& c, uint64_t& turn) {
  size_t start = turn++ % c.size();
  size_t best = start;
  for (size_t k = 1; k < c.size(); ++k) {
    size_t i = (start + k) % c.size();
    const Candidate& a = c[i];
    const Candidate& b = c[best];
    if (a.in_flight_tokens < b.in_flight_tokens ||
        (a.in_flight_tokens == b.in_flight_tokens && a.in_flight_requests < b.in_flight_requests))
      best = i;
  }
  return best;
}

class LeastLoaded final : public Policy {
 public:
  size_t Choose(const std::vector<Candidate>& c, const RequestInfo&) override {
    return LeastLoadedIndex(c, turn_);
  }
  std::string_view name() const override { return "least_loaded"; }

 private:
  uint64_t turn_ = 0;
};

// Remembers, per prefix block hash, the instance that last received a
// request containing it (so the instance's prefix cache likely holds it).
class CacheAware final : public Policy {
 public:
  explicit CacheAware(CacheAwareOptions o) : options_(o) {}

  size_t Choose(const std::vector<Candidate>& c, const RequestInfo& info) override {
    size_t least = LeastLoadedIndex(c, turn_);
    // Longest held prefix first: hashes are chained, so a hit at block i
    // means blocks 0..i are held by that instance.
    for (size_t h = info.prefix_hashes.size(); h-- > 0;) {
      auto it = holder_.find(info.prefix_hashes[h]);
      if (it == holder_.end()) continue;
      for (size_t i = 0; i < c.size(); ++i) {
        if (c[i].id != it->second.id) continue;
        double limit = static_cast<double>(c[least].in_flight_tokens) * options_.overload_factor +
                       static_cast<double>(options_.overload_slack_tokens);
        if (static_cast<double>(c[i].in_flight_tokens) > limit) return least;  // overloaded
        return i;
      }
    }
    return least;
  }

  void Routed(uint64_t id, const RequestInfo& info) override {
    for (uint64_t h : info.prefix_hashes) {
      auto it = holder_.find(h);
      if (it != holder_.end()) {
        it->second.id = id;
        lru_.splice(lru_.begin(), lru_, it->second.pos);
        continue;
      }
      lru_.push_front(h);
      holder_.emplace(h, Entry{id, lru_.begin()});
      if (holder_.size() > options_.max_blocks) {
        holder_.erase(lru_.back());
        lru_.pop_back();
      }
    }
  }

  void Forget(uint64_t id) override {
    for (auto it = holder_.begin(); it != holder_.end();) {
      if (it->second.id == id) {
        lru_.erase(it->second.pos);
        it = holder_.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::string_view name() const override { return "cache_aware"; }

 private:
  struct Entry {
    uint64_t id;
    std::list<uint64_t>::iterator pos;
  };
  const CacheAwareOptions options_;
  uint64_t turn_ = 0;
  std::list<uint64_t> lru_;  // most recent first
  std::unordered_map<uint64_t, Entry> holder_;
};

}  // namespace

StatusOr<PolicyKind> ParsePolicyKind(std::string_view name) {
  if (name == "round_robin") return PolicyKind::kRoundRobin;
  if (name == "least_loaded") return PolicyKind::kLeastLoaded;
  if (name == "cache_aware") return PolicyKind::kCacheAware;
  return InvalidArgumentError(fmt::format(
      "--scheduling '{}' is unknown; use round_robin, least_loaded or cache_aware", name));
}

std::string_view PolicyKindName(PolicyKind kind) {
  switch (kind) {
    case PolicyKind::kRoundRobin: return "round_robin";
    case PolicyKind::kLeastLoaded: return "least_loaded";
    case PolicyKind::kCacheAware: return "cache_aware";
  }
  return "?";
}

bool PolicyNeedsPrefixHashes(PolicyKind kind) { return kind == PolicyKind::kCacheAware; }

std::unique_ptr<Policy> NewPolicy(PolicyKind kind, const CacheAwareOptions& options) {
  switch (kind) {
    case PolicyKind::kRoundRobin: return std::make_unique<RoundRobin>();
    case PolicyKind::kLeastLoaded: return std::make_unique<LeastLoaded>();
    case PolicyKind::kCacheAware: return std::make_unique<CacheAware>(options);
  }
  return nullptr;
}

}  // namespace crescent::proxy
