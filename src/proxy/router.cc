#include "proxy/router.h"

#include <fmt/format.h>

#include <algorithm>
#include <deque>
#include <mutex>

#include "common/config.h"

namespace crescent::proxy {

struct InstanceState {
  // Constant after construction.
  uint64_t id = 0;
  Role role = Role::kPrefill;
  std::string address;
  std::string host;
  uint16_t port = 0;
  // Guarded by RouterState::mu.
  bool member = true;  // false once it left the router
  bool healthy = true;
  bool draining = false;
  int consecutive_failures = 0;
  int consecutive_successes = 0;
  int64_t in_flight_requests = 0;
  int64_t in_flight_tokens = 0;
  uint64_t requests_total = 0;
  uint64_t failures_total = 0;
  std::string last_error;
};

struct RouterState {
  // Constant after construction.
  RouterOptions options;
  PolicyKind policy_kind;

  mutable std::mutex mu;
  // Guarded by mu.
  uint64_t next_id = 1;
  std::vector<std::shared_ptr<InstanceState>> members[2];  // by Role
  std::unique_ptr<Policy> policy[2];
  std::deque<RecentError> errors;

  std::vector<std::shared_ptr<InstanceState>>& Members(Role r) {
    return members[static_cast<int>(r)];
  }
  Policy& PolicyOf(Role r) { return *policy[static_cast<int>(r)]; }

  std::shared_ptr<InstanceState> FindLocked(Role role, std::string_view address) {
    for (auto& m : Members(role))
      if (m->address == address) return m;
    return nullptr;
  }
  void EraseLocked(const std::shared_ptr<InstanceState>& inst) {
    auto& v = Members(inst->role);
    v.erase(std::remove(v.begin(), v.end(), inst), v.end());
    inst->member = false;
    PolicyOf(inst->role).Forget(inst->id);
  }
  void AddErrorLocked(RecentError e) {
    errors.push_back(std::move(e));
    while (errors.size() > options.recent_errors) errors.pop_front();
  }
};

namespace {
int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

std::string_view RoleName(Role role) { return role == Role::kPrefill ? "prefill" : "decode"; }

StatusOr<Role> ParseRole(std::string_view name) {
  if (name == "prefill") return Role::kPrefill;
  if (name == "decode") return Role::kDecode;
  return InvalidArgumentError(
      fmt::format("instance type '{}' is unknown; use \"prefill\" or \"decode\"", name));
}

// ------------------------------------------------------------------ Lease

Lease::Lease(Lease&& o) noexcept
    : state_(std::move(o.state_)), instance_(std::move(o.instance_)), tokens_(o.tokens_) {}

Lease& Lease::operator=(Lease&& o) noexcept {
  if (this != &o) {
    Release();
    state_ = std::move(o.state_);
    instance_ = std::move(o.instance_);
    tokens_ = o.tokens_;
  }
  return *this;
}

const std::string& Lease::address() const { return instance_->address; }
const std::string& Lease::host() const { return instance_->host; }
uint16_t Lease::port() const { return instance_->port; }
uint64_t Lease::instance_id() const { return instance_->id; }
Role Lease::role() const { return instance_->role; }

void Lease::Release() {
  if (!instance_) return;
  {
    std::lock_guard lock(state_->mu);
    instance_->in_flight_requests--;
    instance_->in_flight_tokens -= tokens_;
    // A drained instance leaves once its last request is done.
    if (instance_->draining && instance_->member && instance_->in_flight_requests == 0)
      state_->EraseLocked(instance_);
  }
  instance_.reset();
  state_.reset();
}

// ----------------------------------------------------------------- Router

Router::Router(PolicyKind policy, RouterOptions options, CacheAwareOptions cache)
    : state_(std::make_shared<RouterState>()) {
  state_->options = options;
  state_->policy_kind = policy;
  state_->policy[0] = NewPolicy(policy, cache);
  state_->policy[1] = NewPolicy(policy, cache);
}

Router::~Router() = default;

std::string_view Router::policy_name() const { return PolicyKindName(state_->policy_kind); }

Status Router::Add(Role role, std::string_view address) {
  ASSIGN_OR_RETURN(auto hp, ParseHostPort(address, "instance"));
  std::lock_guard lock(state_->mu);
  if (auto m = state_->FindLocked(role, address)) {
    if (!m->draining)
      return AlreadyExistsError(
          fmt::format("{} instance {} is already in rotation", RoleName(role), address));
    m->draining = false;  // re-added while draining: keep it
    return OkStatus();
  }
  auto inst = std::make_shared<InstanceState>();
  inst->id = state_->next_id++;
  inst->role = role;
  inst->address = std::string(address);
  inst->host = hp.first;
  inst->port = hp.second;
  state_->Members(role).push_back(std::move(inst));
  return OkStatus();
}

Status Router::Remove(Role role, std::string_view address) {
  std::lock_guard lock(state_->mu);
  auto m = state_->FindLocked(role, address);
  if (!m)
    return NotFoundError(fmt::format("{} instance {} is not a member; GET /status lists them",
                                     RoleName(role), address));
  m->draining = true;
  if (m->in_flight_requests == 0) state_->EraseLocked(m);
  return OkStatus();
}

StatusOr<Lease> Router::Pick(Role role, const RequestInfo& info,
                             const std::vector<uint64_t>& exclude) {
  std::lock_guard lock(state_->mu);
  auto& members = state_->Members(role);
  std::vector<Candidate> cands;
  std::vector<InstanceState*> insts;
  cands.reserve(members.size());
  size_t unhealthy = 0, draining = 0, tried = 0;
  for (auto& m : members) {
    if (m->draining) { ++draining; continue; }
    if (!m->healthy) { ++unhealthy; continue; }
    if (std::find(exclude.begin(), exclude.end(), m->id) != exclude.end()) { ++tried; continue; }
    cands.push_back({m->id, m->address, m->in_flight_requests, m->in_flight_tokens});
    insts.push_back(m.get());
  }
  if (cands.empty()) {
    return UnavailableError(fmt::format(
        "no {} instance can take the request ({} configured: {} unhealthy, {} draining, {} "
        "already tried); add one with POST /instances/add or check GET /status",
        RoleName(role), members.size(), unhealthy, draining, tried));
  }
  size_t i = state_->PolicyOf(role).Choose(cands, info);
  if (i >= cands.size()) i = 0;
  InstanceState* chosen = insts[i];
  state_->PolicyOf(role).Routed(chosen->id, info);
  chosen->in_flight_requests++;
  chosen->in_flight_tokens += info.tokens;
  chosen->requests_total++;
  Lease lease;
  lease.state_ = state_;
  for (auto& m : members)
    if (m.get() == chosen) lease.instance_ = m;
  lease.tokens_ = info.tokens;
  return lease;
}

bool Router::ReportProbe(Role role, std::string_view address, const Status& result) {
  std::lock_guard lock(state_->mu);
  auto m = state_->FindLocked(role, address);
  if (!m) return false;
  if (result.ok()) {
    m->consecutive_failures = 0;
    if (!m->healthy && ++m->consecutive_successes >= state_->options.healthy_after) {
      m->healthy = true;
      m->consecutive_successes = 0;
    }
    return false;
  }
  m->consecutive_successes = 0;
  m->last_error = result.message();
  if (++m->consecutive_failures >= state_->options.unhealthy_after && m->healthy) {
    m->healthy = false;
    state_->AddErrorLocked({NowUnixMs(), "", role, m->address,
                            "health probe failed, out of rotation: " + result.message()});
    return true;
  }
  return false;
}

void Router::ReportFailure(const Lease& lease, std::string_view request_id, const Status& error,
                           bool unreachable) {
  if (!lease) return;
  std::lock_guard lock(state_->mu);
  InstanceState& m = *lease.instance_;
  m.failures_total++;
  m.last_error = error.message();
  if (unreachable && m.healthy) {
    m.healthy = false;
    m.consecutive_successes = 0;
  }
  state_->AddErrorLocked(
      {NowUnixMs(), std::string(request_id), m.role, m.address, error.ToString()});
}

void Router::RecordError(Role role, std::string_view address, std::string_view request_id,
                         std::string_view message) {
  std::lock_guard lock(state_->mu);
  state_->AddErrorLocked({NowUnixMs(), std::string(request_id), role, std::string(address),
                          std::string(message)});
}

std::vector<InstanceStatus> Router::Instances() const {
  std::lock_guard lock(state_->mu);
  std::vector<InstanceStatus> out;
  for (Role r : {Role::kPrefill, Role::kDecode}) {
    for (const auto& m : state_->Members(r)) {
      out.push_back({r, m->address, m->healthy, m->draining, m->in_flight_requests,
                     m->in_flight_tokens, m->requests_total, m->failures_total, m->last_error});
    }
  }
  return out;
}

std::vector<RecentError> Router::RecentErrors() const {
  std::lock_guard lock(state_->mu);
  return {state_->errors.begin(), state_->errors.end()};
}

size_t Router::Available(Role role) const {
  std::lock_guard lock(state_->mu);
  size_t n = 0;
  for (const auto& m : state_->Members(role)) n += (m->healthy && !m->draining);
  return n;
}

}  // namespace crescent::proxy
