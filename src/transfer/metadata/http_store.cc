// MetadataStore over the embedded HTTP metadata service (metadata_service.h
// documents the protocol): one lease per client, kept alive every ttl/3.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "common/http.h"
#include "transfer/metadata/backends.h"
#include "transfer/metadata/base64.h"
#include "transfer/metadata/leased_store.h"

namespace crescent::transfer {
namespace {

class HttpStore final : public LeasedStore {
 public:
  HttpStore(const MetadataServerSpec& spec, const MetadataOptions& options)
      : LeasedStore(options),
        host_(spec.endpoints[0].first),
        port_(spec.endpoints[0].second),
        path_(spec.http_path.empty() ? "/metadata" : spec.http_path),
        describe_(fmt::format("http://{}:{}{}", host_, port_, path_)),
        client_(host_, port_, ClientOptionsFor(options)) {}

  ~HttpStore() override {
    StopRefresher();
    uint64_t lease = lease_.load();
    // Entries of a closed client are stale at once: drop them now rather
    // than after the ttl.
    if (lease != 0) client_.Delete(fmt::format("{}/lease?lease={}", path_, lease)).status().IgnoreError();
  }

  Status Init() {
    if (options().leased) {
      RETURN_IF_ERROR(Grant());
    } else {
      // Only checks that the service answers.
      ASSIGN_OR_RETURN(auto r, Call({http::Method::kGet, KeyTarget("crescent-probe"), {}, {}, {}}));
      if (r.status != 200 && r.status != 404) return Unexpected(r, "GET");
    }
    StartRefresher();
    return OkStatus();
  }

  std::string Describe() const override { return describe_; }

 protected:
  Status BackendPut(std::string_view key, std::string_view value) override {
    for (int attempt = 0;; ++attempt) {
      uint64_t lease = lease_.load();
      std::string target = KeyTarget(key);
      if (lease != 0) target += fmt::format("&lease={}", lease);
      ASSIGN_OR_RETURN(auto r, Call({http::Method::kPut, std::move(target), std::string(value),
                                     "application/octet-stream", {}}));
      if (r.status == 200) return OkStatus();
      if (r.status == 404 && lease != 0 && attempt == 0) {
        // Our lease expired (a long pause, a restarted service): take a new
        // one; the refresher publishes the other entries again.
        RETURN_IF_ERROR(Regrant(lease));
        continue;
      }
      return Unexpected(r, "PUT");
    }
  }

  StatusOr<std::string> BackendGet(std::string_view key) override {
    ASSIGN_OR_RETURN(auto r, Call({http::Method::kGet, KeyTarget(key), {}, {}, {}}));
    if (r.status == 404)
      return NotFoundError(fmt::format("metadata key '{}' not found at {}", key, describe_));
    if (r.status != 200) return Unexpected(r, "GET");
    return std::move(r.body);
  }

  Status BackendDelete(std::string_view key) override {
    ASSIGN_OR_RETURN(auto r, Call({http::Method::kDelete, KeyTarget(key), {}, {}, {}}));
    if (r.status == 200 || r.status == 404) return OkStatus();
    return Unexpected(r, "DELETE");
  }

  StatusOr<std::vector<std::pair<std::string, std::string>>> BackendList(std::string_view prefix) override {
    ASSIGN_OR_RETURN(auto r, Call({http::Method::kGet,
                                   fmt::format("{}?prefix={}", path_, http::UrlEncode(prefix)), {}, {}, {}}));
    if (r.status != 200) return Unexpected(r, "GET (list)");
    std::vector<std::pair<std::string, std::string>> out;
    try {
      auto j = nlohmann::json::parse(r.body);
      for (const auto& kv : j.at("kvs")) {
        ASSIGN_OR_RETURN(auto k, Base64Decode(kv.at("key").get<std::string>()));
        ASSIGN_OR_RETURN(auto v, Base64Decode(kv.at("value").get<std::string>()));
        out.emplace_back(std::move(k), std::move(v));
      }
    } catch (const std::exception& e) {
      return InternalError(fmt::format("{}: malformed list reply: {}", describe_, e.what()));
    }
    return out;
  }

  Status Refresh(const Owned& owned) override {
    uint64_t lease = lease_.load();
    bool lost = republish_.exchange(false);
    if (!lost) {
      ASSIGN_OR_RETURN(auto r, Call({http::Method::kPost,
                                     fmt::format("{}/lease/keepalive?lease={}", path_, lease), {}, {}, {}}));
      if (r.status == 404) {
        spdlog::warn("metadata {}: lease {} expired; publishing {} entries again", describe_, lease,
                     owned.size());
        RETURN_IF_ERROR(Regrant(lease));
        lost = true;
      } else if (r.status != 200) {
        return Unexpected(r, "POST (keepalive)");
      }
    }
    if (lost) {
      for (const auto& [k, v] : owned) {
        Status st = BackendPut(k, v);
        if (!st.ok()) {
          republish_ = true;  // finish next tick
          return st;
        }
      }
    }
    return OkStatus();
  }

 private:
  static http::ClientOptions ClientOptionsFor(const MetadataOptions& o) {
    http::ClientOptions c;
    c.connect_timeout = o.op_timeout;
    c.timeout = o.op_timeout;
    return c;
  }

  std::string KeyTarget(std::string_view key) const {
    return fmt::format("{}?key={}", path_, http::UrlEncode(key));
  }

  StatusOr<http::ClientResponse> Call(const http::ClientRequest& req) {
    auto r = client_.Send(req);
    if (!r.ok()) return r.status().WithContext(fmt::format("metadata server {}", describe_));
    return r;
  }

  Status Unexpected(const http::ClientResponse& r, std::string_view what) const {
    std::string body = r.body.substr(0, 200);
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
    std::string hint = r.status == 404 || r.status == 405
                           ? fmt::format(" (is {} a crescent metadata server? check the path)", describe_)
                           : "";
    return UnavailableError(fmt::format("metadata server {}: {} answered HTTP {}: {}{}", describe_,
                                        what, r.status, body, hint));
  }

  Status Grant() {
    ASSIGN_OR_RETURN(auto r, Call({http::Method::kPost,
                                   fmt::format("{}/lease?ttl_ms={}", path_, options().ttl.count()),
                                   {}, {}, {}}));
    if (r.status != 200) return Unexpected(r, "POST (lease grant)");
    try {
      auto j = nlohmann::json::parse(r.body);
      lease_ = std::stoull(j.at("id").get<std::string>());
    } catch (const std::exception& e) {
      return InternalError(fmt::format("{}: malformed lease reply '{}': {}", describe_, r.body, e.what()));
    }
    return OkStatus();
  }

  // Replaces `old` with a new lease unless another thread already did.
  Status Regrant(uint64_t old) {
    std::lock_guard lock(lease_mu_);
    if (lease_.load() != old) return OkStatus();
    RETURN_IF_ERROR(Grant());
    republish_ = true;
    return OkStatus();
  }

  const std::string host_;
  const uint16_t port_;
  const std::string path_;
  const std::string describe_;
  http::Client client_;  // thread-safe
  std::mutex lease_mu_;  // serializes re-grants
  std::atomic<uint64_t> lease_{0};
  std::atomic<bool> republish_{false};  // owned entries must be written again
};

}  // namespace

StatusOr<std::unique_ptr<MetadataStore>> OpenHttpMetadataStore(const MetadataServerSpec& spec,
                                                               const MetadataOptions& options) {
  auto store = std::make_unique<HttpStore>(spec, options);
  Status st = store->Init();
  if (!st.ok()) {
    auto [host, port] = spec.endpoints[0];
    return Status(st.code(), fmt::format("{}; start one with `crescent metadata-server --port {}` "
                                         "(or `crescent master --enable-http-metadata-server`), "
                                         "or fix metadata_server",
                                         st.message(), port));
  }
  return std::unique_ptr<MetadataStore>(std::move(store));
}

}  // namespace crescent::transfer
