// MetadataStore over a real etcd through its v3 JSON gateway (/v3/kv/put,
// /v3/kv/range, /v3/kv/deleterange, /v3/lease/*; keys and values base64).
// One lease per client, kept alive every ttl/3; several endpoints with
// failover: an operation goes to the endpoint that answered last and moves
// on to the next when it cannot be reached.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <nlohmann/json.hpp>

#include "common/http.h"
#include "transfer/metadata/backends.h"
#include "transfer/metadata/base64.h"
#include "transfer/metadata/leased_store.h"

namespace crescent::transfer {
namespace {

using nlohmann::json;

// The first key after every key that starts with `prefix` (etcd's
// range_end for a prefix query); "\0" means "to the end".
std::string PrefixEnd(std::string prefix) {
  while (!prefix.empty()) {
    if (static_cast<unsigned char>(prefix.back()) < 0xff) {
      prefix.back() = static_cast<char>(prefix.back() + 1);
      return prefix;
    }
    prefix.pop_back();
  }
  return std::string(1, '\0');
}

class EtcdStore final : public LeasedStore {
 public:
  EtcdStore(const MetadataServerSpec& spec, const MetadataOptions& options) : LeasedStore(options) {
    http::ClientOptions co;
    co.connect_timeout = options.op_timeout;
    co.timeout = options.op_timeout;
    std::string list;
    for (const auto& [host, port] : spec.endpoints) {
      clients_.push_back(std::make_unique<http::Client>(host, port, co));
      list += (list.empty() ? "" : ",") + clients_.back()->address();
    }
    describe_ = "etcd://" + list;
  }

  ~EtcdStore() override {
    StopRefresher();
    // Entries of a closed client are stale at once: revoke rather than wait.
    if (int64_t lease = lease_.load(); lease != 0)
      Call("/v3/lease/revoke", {{"ID", std::to_string(lease)}}).status().IgnoreError();
  }

  Status Init() {
    if (options().leased) {
      RETURN_IF_ERROR(Grant());
    } else {
      auto probe = BackendGet("crescent-probe");  // only checks that etcd answers
      if (!probe.ok() && probe.status().code() != StatusCode::kNotFound) return probe.status();
    }
    StartRefresher();
    return OkStatus();
  }

  std::string Describe() const override { return describe_; }

 protected:
  Status BackendPut(std::string_view key, std::string_view value) override {
    for (int attempt = 0;; ++attempt) {
      int64_t lease = lease_.load();
      json req{{"key", Base64Encode(key)}, {"value", Base64Encode(value)}};
      if (lease != 0) req["lease"] = std::to_string(lease);
      auto r = Call("/v3/kv/put", req);
      if (r.ok()) return OkStatus();
      if (lease != 0 && attempt == 0 && r.status().message().find("lease not found") != std::string::npos) {
        // Our lease expired (a long pause or partition): take a new one; the
        // refresher publishes the other entries again.
        RETURN_IF_ERROR(Regrant(lease));
        continue;
      }
      return r.status();
    }
  }

  StatusOr<std::string> BackendGet(std::string_view key) override {
    ASSIGN_OR_RETURN(json r, Call("/v3/kv/range", {{"key", Base64Encode(key)}}));
    if (!r.contains("kvs") || r["kvs"].empty())
      return NotFoundError(fmt::format("metadata key '{}' not found at {}", key, describe_));
    return Base64Decode(r["kvs"][0].value("value", ""));
  }

  Status BackendDelete(std::string_view key) override {
    return Call("/v3/kv/deleterange", {{"key", Base64Encode(key)}}).status();
  }

  StatusOr<std::vector<std::pair<std::string, std::string>>> BackendList(std::string_view prefix) override {
    std::string start = prefix.empty() ? std::string(1, '\0') : std::string(prefix);
    ASSIGN_OR_RETURN(json r, Call("/v3/kv/range", {{"key", Base64Encode(start)},
                                                   {"range_end", Base64Encode(PrefixEnd(std::string(prefix)))}}));
    std::vector<std::pair<std::string, std::string>> out;
    if (!r.contains("kvs")) return out;
    for (const auto& kv : r["kvs"]) {
      ASSIGN_OR_RETURN(auto k, Base64Decode(kv.value("key", "")));
      ASSIGN_OR_RETURN(auto v, Base64Decode(kv.value("value", "")));
      out.emplace_back(std::move(k), std::move(v));
    }
    return out;
  }

  Status Refresh(const Owned& owned) override {
    int64_t lease = lease_.load();
    bool lost = republish_.exchange(false);
    if (!lost) {
      ASSIGN_OR_RETURN(json r, Call("/v3/lease/keepalive", {{"ID", std::to_string(lease)}}));
      // An expired lease answers without a TTL (or TTL 0).
      const json& res = r.contains("result") ? r["result"] : r;
      int64_t ttl = 0;
      if (res.contains("TTL"))  // int64 arrives as a string; accept a number too
        ttl = res["TTL"].is_string() ? std::stoll(res["TTL"].get<std::string>()) : res["TTL"].get<int64_t>();
      if (ttl <= 0) {
        spdlog::warn("metadata {}: lease {} expired; publishing {} entries again", describe_, lease,
                     owned.size());
        RETURN_IF_ERROR(Regrant(lease));
        lost = true;
      }
    }
    if (lost) {
      for (const auto& [k, v] : owned) {
        Status st = BackendPut(k, v);
        if (!st.ok()) {
          republish_ = true;
          return st;
        }
      }
    }
    return OkStatus();
  }

 private:
  // POSTs `body` to the first endpoint that answers, starting with the one
  // that answered last. An etcd error reply is returned as is (no failover).
  StatusOr<json> Call(std::string_view path, const json& body) {
    const size_t n = clients_.size();
    const size_t first = current_.load();
    std::string tried;
    for (size_t i = 0; i < n; ++i) {
      size_t idx = (first + i) % n;
      auto r = clients_[idx]->Post(std::string(path), body.dump());
      if (!r.ok()) {
        tried += (tried.empty() ? "" : "; ") + r.status().message();
        continue;
      }
      if (idx != first) {
        current_ = idx;
        spdlog::info("metadata {}: now using etcd endpoint {}", describe_, clients_[idx]->address());
      }
      json j = json::parse(r->body.substr(0, r->body.find('\n')), nullptr, false);
      if (r->status == 200 && !j.is_discarded()) return j;
      std::string msg = j.is_object() ? j.value("message", r->body) : r->body;
      StatusCode code = r->status == 404 ? StatusCode::kNotFound : StatusCode::kUnavailable;
      return Status(code, fmt::format("etcd {}: {} answered HTTP {}: {}", clients_[idx]->address(),
                                      path, r->status, msg));
    }
    return UnavailableError(fmt::format("metadata server {}: {}", describe_, tried));
  }

  Status Grant() {
    int64_t secs = std::max<int64_t>(1, (options().ttl.count() + 999) / 1000);
    ASSIGN_OR_RETURN(json r, Call("/v3/lease/grant", {{"TTL", std::to_string(secs)}}));
    try {
      lease_ = std::stoll(r.at("ID").get<std::string>());
    } catch (const std::exception& e) {
      return InternalError(fmt::format("{}: malformed lease grant reply '{}'", describe_, r.dump()));
    }
    return OkStatus();
  }

  Status Regrant(int64_t old) {
    std::lock_guard lock(lease_mu_);
    if (lease_.load() != old) return OkStatus();
    RETURN_IF_ERROR(Grant());
    republish_ = true;
    return OkStatus();
  }

  std::vector<std::unique_ptr<http::Client>> clients_;  // constant; each thread-safe
  std::string describe_;
  std::atomic<size_t> current_{0};  // endpoint that answered last
  std::mutex lease_mu_;             // serializes re-grants
  std::atomic<int64_t> lease_{0};
  std::atomic<bool> republish_{false};
};

}  // namespace

StatusOr<std::unique_ptr<MetadataStore>> OpenEtcdMetadataStore(const MetadataServerSpec& spec,
                                                               const MetadataOptions& options) {
  auto store = std::make_unique<EtcdStore>(spec, options);
  Status st = store->Init();
  if (!st.ok())
    return Status(st.code(), fmt::format("{}; start etcd there (e.g. `etcd --listen-client-urls "
                                         "http://0.0.0.0:2379 --advertise-client-urls "
                                         "http://HOST:2379`) or fix metadata_server",
                                         st.message()));
  return std::unique_ptr<MetadataStore>(std::move(store));
}

}  // namespace crescent::transfer
