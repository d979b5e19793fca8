// Router: the proxy's membership, health and load bookkeeping, with no I/O.
//
// For each role (prefill, decode) the router holds the instances ("host:port"),
// their health, whether they are draining, and what is in flight on each.
// Pick() asks the role's Policy for an instance among those that may take a
// request and returns a Lease that counts the request (and its tokens) as
// in flight until the Lease is released or destroyed.
//
// Membership: Add() puts an instance in rotation; Remove() drains it: it
// gets no new request, its in-flight requests finish, and it leaves the
// router when the last one is released.
// Health: instances start healthy. ReportProbe() feeds periodic probe
// results: `unhealthy_after` consecutive failures take an instance out of
// rotation, `healthy_after` successes bring it back. ReportFailure() records
// a failed request; a connection that could not be made takes the instance
// out at once (the probes bring it back), so a killed instance stops getting
// traffic before the next probe.
//
// Thread safety: every method may be called from any thread (one mutex).
// Leases may outlive the Router object (they keep its state alive).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "proxy/policy.h"

namespace crescent::proxy {

enum class Role { kPrefill, kDecode };
std::string_view RoleName(Role role);  // "prefill" | "decode"
// "prefill" | "decode"; INVALID_ARGUMENT otherwise.
StatusOr<Role> ParseRole(std::string_view name);

struct RouterOptions {
  int unhealthy_after = 2;  // consecutive failed probes
  int healthy_after = 1;    // consecutive good probes
  size_t recent_errors = 64;  // kept for /status
};

struct InstanceStatus {
  Role role;
  std::string address;  // "host:port"
  bool healthy = true;
  bool draining = false;
  int64_t in_flight_requests = 0;
  int64_t in_flight_tokens = 0;
  uint64_t requests_total = 0;  // leases handed out
  uint64_t failures_total = 0;  // ReportFailure calls
  std::string last_error;       // of the last failed probe or request; "" if none
};

struct RecentError {
  int64_t unix_ms = 0;
  std::string request_id;  // "" for probes
  Role role;
  std::string address;
  std::string message;
};

struct RouterState;  // in router.cc
struct InstanceState;

// One request in flight on one instance. Move-only; Release() (or the
// destructor) ends it. An empty Lease (moved from) does nothing.
class Lease {
 public:
  Lease() = default;
  ~Lease() { Release(); }
  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  explicit operator bool() const { return instance_ != nullptr; }
  const std::string& address() const;  // "host:port"
  const std::string& host() const;
  uint16_t port() const;
  uint64_t instance_id() const;
  Role role() const;

  void Release();

 private:
  friend class Router;
  std::shared_ptr<RouterState> state_;
  std::shared_ptr<InstanceState> instance_;
  int64_t tokens_ = 0;
};

class Router {
 public:
  Router(PolicyKind policy, RouterOptions options = {}, CacheAwareOptions cache = {});
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // Puts "host:port" in rotation. Re-adding a draining instance cancels the
  // drain; adding one already in rotation is ALREADY_EXISTS.
  Status Add(Role role, std::string_view address);
  // Drains the instance (see above); NOT_FOUND when it is not a member.
  Status Remove(Role role, std::string_view address);

  // An instance for a request, excluding instance ids in `exclude` (those
  // already tried). UNAVAILABLE when none may take it, saying why.
  StatusOr<Lease> Pick(Role role, const RequestInfo& info,
                       const std::vector<uint64_t>& exclude = {});

  // A probe of the instance ended with `result`. True when this probe took
  // the instance out of rotation.
  bool ReportProbe(Role role, std::string_view address, const Status& result);
  // A request on the lease's instance failed; `unreachable` (the connection
  // could not be made) takes the instance out of rotation at once.
  void ReportFailure(const Lease& lease, std::string_view request_id, const Status& error,
                     bool unreachable);
  // A failure that concerns the request more than an instance, for /status.
  void RecordError(Role role, std::string_view address, std::string_view request_id,
                   std::string_view message);

  // Members (draining ones included), prefill first, in the order added.
  std::vector<InstanceStatus> Instances() const;
  std::vector<RecentError> RecentErrors() const;  // oldest first
  // Instances that may take a request now, per role.
  size_t Available(Role role) const;
  std::string_view policy_name() const;

 private:
  std::shared_ptr<RouterState> state_;
};

}  // namespace crescent::proxy
