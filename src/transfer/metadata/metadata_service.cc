// The embedded metadata service: one map under one mutex (operations are
// tiny), leases expired lazily at the start of each operation.
#include "transfer/metadata/metadata_service.h"

#include <fmt/format.h>

#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <unordered_map>

#include "transfer/metadata/base64.h"

namespace crescent::transfer {
namespace {

using Clock = std::chrono::steady_clock;
using http::Method;
using http::Request;
using http::Response;

class ServiceImpl final : public MetadataService,
                          public std::enable_shared_from_this<ServiceImpl> {
 public:
  explicit ServiceImpl(MetadataServiceOptions o) : options_(std::move(o)) {
    // Random ids: a client of a restarted service must not keep alive a
    // lease that now belongs to someone else.
    std::random_device rd;
    rng_.seed((uint64_t(rd()) << 32) ^ rd());
  }

  void AddRoutes(http::Server& server) override {
    auto self = shared_from_this();
    const std::string& p = options_.path;
    server.Handle(Method::kGet, p, [self](const Request& r) { return self->Get(r); });
    server.Handle(Method::kPut, p, [self](const Request& r) { return self->Put(r); });
    server.Handle(Method::kPost, p, [self](const Request& r) { return self->Put(r); });
    server.Handle(Method::kDelete, p, [self](const Request& r) { return self->Delete(r); });
    server.Handle(Method::kPost, p + "/lease", [self](const Request& r) { return self->Grant(r); });
    server.Handle(Method::kDelete, p + "/lease", [self](const Request& r) { return self->Revoke(r); });
    server.Handle(Method::kPost, p + "/lease/keepalive",
                  [self](const Request& r) { return self->KeepAlive(r); });
  }

  size_t entry_count() override {
    std::lock_guard lock(mu_);
    ExpireLocked();
    return kv_.size();
  }
  size_t lease_count() override {
    std::lock_guard lock(mu_);
    ExpireLocked();
    return leases_.size();
  }

 private:
  struct Entry {
    std::string value;
    uint64_t lease = 0;  // 0: none
  };
  struct Lease {
    std::chrono::milliseconds ttl;
    Clock::time_point deadline;
    std::set<std::string> keys;
  };

  static Response Missing(std::string_view what) { return Response::Text(400, fmt::format("missing query parameter '{}'\n", what)); }

  static std::optional<uint64_t> ParseId(const Request& r) {
    auto v = r.Query("lease");
    if (!v || v->empty()) return std::nullopt;
    char* end = nullptr;
    uint64_t id = std::strtoull(v->c_str(), &end, 10);
    if (*end != '\0' || id == 0) return std::nullopt;
    return id;
  }

  void ExpireLocked() {
    auto now = Clock::now();
    for (auto it = leases_.begin(); it != leases_.end();) {
      if (it->second.deadline <= now) {
        for (const auto& k : it->second.keys) kv_.erase(k);
        it = leases_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void DetachLocked(const std::string& key, uint64_t lease) {
    if (lease == 0) return;
    if (auto it = leases_.find(lease); it != leases_.end()) it->second.keys.erase(key);
  }

  Response Get(const Request& r) {
    auto key = r.Query("key");
    if (!key) {
      if (auto prefix = r.Query("prefix")) return List(*prefix);
      return Missing("key");
    }
    std::lock_guard lock(mu_);
    ExpireLocked();
    auto it = kv_.find(*key);
    if (it == kv_.end()) return Response::Text(404, "metadata not found");
    Response resp = Response::Text(200, it->second.value);
    resp.content_type = "application/octet-stream";
    return resp;
  }

  Response List(const std::string& prefix) {
    nlohmann::json kvs = nlohmann::json::array();
    {
      std::lock_guard lock(mu_);
      ExpireLocked();
      for (auto it = kv_.lower_bound(prefix); it != kv_.end() && it->first.starts_with(prefix); ++it)
        kvs.push_back({{"key", Base64Encode(it->first)}, {"value", Base64Encode(it->second.value)}});
    }
    return Response::Json(200, nlohmann::json{{"kvs", std::move(kvs)}}.dump());
  }

  Response Put(const Request& r) {
    auto key = r.Query("key");
    if (!key) return Missing("key");
    uint64_t lease = 0;
    if (r.Query("lease")) {
      auto id = ParseId(r);
      if (!id) return Response::Text(400, "lease must be a positive decimal id\n");
      lease = *id;
    }
    std::lock_guard lock(mu_);
    ExpireLocked();
    Lease* l = nullptr;
    if (lease != 0) {
      auto it = leases_.find(lease);
      if (it == leases_.end()) return Response::Text(404, fmt::format("lease {} not found (expired?)\n", lease));
      l = &it->second;
    }
    auto [it, inserted] = kv_.try_emplace(*key);
    if (!inserted) DetachLocked(*key, it->second.lease);
    it->second.value = r.body;
    it->second.lease = lease;
    if (l) l->keys.insert(*key);
    return Response::Text(200, "metadata updated");
  }

  Response Delete(const Request& r) {
    auto key = r.Query("key");
    if (!key) return Missing("key");
    std::lock_guard lock(mu_);
    ExpireLocked();
    auto it = kv_.find(*key);
    if (it == kv_.end()) return Response::Text(404, "metadata not found");
    DetachLocked(*key, it->second.lease);
    kv_.erase(it);
    return Response::Text(200, "metadata deleted");
  }

  Response Grant(const Request& r) {
    auto ttl_text = r.Query("ttl_ms");
    if (!ttl_text) return Missing("ttl_ms");
    auto ttl = std::chrono::milliseconds(std::strtoll(ttl_text->c_str(), nullptr, 10));
    ttl = std::clamp(ttl, options_.min_ttl, options_.max_ttl);
    std::lock_guard lock(mu_);
    ExpireLocked();
    uint64_t id;
    do id = rng_() >> 11;  // fits a double: JSON readers stay exact
    while (id == 0 || leases_.count(id));
    leases_[id] = Lease{ttl, Clock::now() + ttl, {}};
    return Response::Json(200, nlohmann::json{{"id", std::to_string(id)}, {"ttl_ms", ttl.count()}}.dump());
  }

  Response KeepAlive(const Request& r) {
    auto id = ParseId(r);
    if (!id) return Missing("lease");
    std::lock_guard lock(mu_);
    ExpireLocked();
    auto it = leases_.find(*id);
    if (it == leases_.end()) return Response::Text(404, fmt::format("lease {} not found (expired?)\n", *id));
    it->second.deadline = Clock::now() + it->second.ttl;
    return Response::Json(200, nlohmann::json{{"ttl_ms", it->second.ttl.count()}}.dump());
  }

  Response Revoke(const Request& r) {
    auto id = ParseId(r);
    if (!id) return Missing("lease");
    std::lock_guard lock(mu_);
    ExpireLocked();
    auto it = leases_.find(*id);
    if (it == leases_.end()) return Response::Text(404, fmt::format("lease {} not found\n", *id));
    for (const auto& k : it->second.keys) kv_.erase(k);
    leases_.erase(it);
    return Response::Text(200, "lease revoked");
  }

  const MetadataServiceOptions options_;
  std::mutex mu_;
  std::map<std::string, Entry, std::less<>> kv_;  // guarded by mu_
  std::unordered_map<uint64_t, Lease> leases_;    // guarded by mu_
  std::mt19937_64 rng_;                           // guarded by mu_
};

}  // namespace

std::shared_ptr<MetadataService> MetadataService::Create(MetadataServiceOptions options) {
  return std::make_shared<ServiceImpl>(std::move(options));
}

}  // namespace crescent::transfer
