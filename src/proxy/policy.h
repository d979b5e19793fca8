// Routing policies: which instance of one role serves a request.
//
// A Policy sees the instances that may take the request right now (healthy,
// not draining, not already tried for this request) with their load, and
// picks one. Three policies, as `--scheduling` names them:
//   round_robin   the next instance in turn;
//   least_loaded  the fewest in-flight tokens (ties: fewest requests, then
//                 in turn);
//   cache_aware   the instance that holds the longest prefix of the request
//                 (by chained block hashes, see prefix_hash.h), unless it is
//                 overloaded, then least_loaded.
//
// Thread safety: a Policy is called under the Router's lock of its role;
// implementations need no locking of their own.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace crescent::proxy {

// What the router knows about a request before it is routed.
struct RequestInfo {
  // Tokens the instance must hold for this request: prompt tokens for a
  // prefill instance, prompt + max_tokens for a decode instance.
  int64_t tokens = 0;
  // Chained hashes of the prompt's blocks, first block first (hash i covers
  // blocks 0..i). Empty when the policy needs none.
  std::vector<uint64_t> prefix_hashes;
};

// One instance that may take the request.
struct Candidate {
  uint64_t id = 0;  // stable for the instance's lifetime in the router
  std::string_view address;
  int64_t in_flight_requests = 0;
  int64_t in_flight_tokens = 0;
};

struct CacheAwareOptions {
  // The holder of a prefix is skipped when its in-flight tokens exceed the
  // least loaded candidate's by more than this factor plus slack.
  double overload_factor = 2.0;
  int64_t overload_slack_tokens = 4096;
  // Prefix blocks remembered (LRU); about 32 bytes each.
  size_t max_blocks = 1u << 20;
};

class Policy {
 public:
  virtual ~Policy() = default;
  // Index into `candidates` (never empty) of the chosen instance.
  virtual size_t Choose(const std::vector<Candidate>& candidates, const RequestInfo& info) = 0;
  // The request went to instance `id` (cache_aware remembers its prefix).
  virtual void Routed(uint64_t id, const RequestInfo& info) {}
  // Instance `id` left the router (cache_aware forgets what it held).
  virtual void Forget(uint64_t id) {}
  // "round_robin" ...
  virtual std::string_view name() const = 0;
};

enum class PolicyKind { kRoundRobin, kLeastLoaded, kCacheAware };

// "round_robin" | "least_loaded" | "cache_aware"; INVALID_ARGUMENT names the choices.
StatusOr<PolicyKind> ParsePolicyKind(std::string_view name);
std::string_view PolicyKindName(PolicyKind kind);
bool PolicyNeedsPrefixHashes(PolicyKind kind);

std::unique_ptr<Policy> NewPolicy(PolicyKind kind, const CacheAwareOptions& options = {});

}  // namespace crescent::proxy
