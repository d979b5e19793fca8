#include "store/master_http.h"

#include <nlohmann/json.hpp>

#include "common/http.h"
#include "common/logging.h"
#ifdef CRESCENT_HAVE_METADATA_BACKENDS
#include "transfer/metadata/metadata_service.h"
#endif

namespace crescent::store {
namespace {

http::Response JsonError(int status, const Status& s) {
  nlohmann::json j = {{"error", std::string(StatusCodeName(s.code()))}, {"message", s.message()}};
  return http::Response::Json(status, j.dump());
}

class MasterHttpImpl final : public MasterHttp {
 public:
  Status Init(const MasterServerOptions& o, MasterCore* core,
              std::function<std::string()> metrics) {
    if (o.enable_metrics) {
      http::ServerOptions so;
      so.host = o.host;
      so.port = o.metrics_port;
      so.server_name = "crescent-master";
      metrics_server_ = std::make_unique<http::Server>(so);
      auto& s = *metrics_server_;
      s.Handle(http::Method::kGet, "/metrics", [metrics](const http::Request&) {
        http::Response r = http::Response::Text(200, metrics());
        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
        return r;
      });
      s.Handle(http::Method::kGet, "/health",
               [](const http::Request&) { return http::Response::Text(200, "ok\n"); });
      s.Handle(http::Method::kGet, "/query_key", [core](const http::Request& req) {
        auto key = req.Query("key");
        if (!key) return JsonError(400, InvalidArgumentError("give the key: /query_key?key=K"));
        auto info = core->QueryKey(*key);
        if (!info.ok()) {
          return JsonError(info.status().code() == StatusCode::kNotFound ? 404 : 400, info.status());
        }
        return http::Response::Json(200, ObjectInfoJson(*key, *info));
      });
      s.Handle(http::Method::kGet, "/segments", [core](const http::Request&) {
        return http::Response::Json(200, SegmentsJson(core->ListSegments()));
      });
      RETURN_IF_ERROR(s.Start().WithContext("master --metrics-port"));
    }
    if (o.enable_http_metadata_server) {
#ifdef CRESCENT_HAVE_METADATA_BACKENDS
      http::ServerOptions so;
      so.host = o.host;
      so.port = o.http_metadata_server_port;
      so.io_threads = 1;
      metadata_server_ = std::make_unique<http::Server>(so);
      transfer::MetadataService::Create()->AddRoutes(*metadata_server_);
      RETURN_IF_ERROR(metadata_server_->Start().WithContext("master --http-metadata-server-port"));
      spdlog::info("master: HTTP metadata service on http://{}/metadata", metadata_server_->address());
#else
      return FailedPreconditionError(
          "--enable-http-metadata-server: this build has no metadata service (crescent_metadata)");
#endif
    }
    return OkStatus();
  }

  uint16_t metrics_port() const override { return metrics_server_ ? metrics_server_->port() : 0; }
  uint16_t metadata_port() const override {
    return metadata_server_ ? metadata_server_->port() : 0;
  }

 private:
  std::unique_ptr<http::Server> metrics_server_;
  std::unique_ptr<http::Server> metadata_server_;
};

}  // namespace

StatusOr<std::unique_ptr<MasterHttp>> MasterHttp::Start(const MasterServerOptions& options,
                                                       MasterCore* core,
                                                       std::function<std::string()> metrics) {
  auto http = std::make_unique<MasterHttpImpl>();
  RETURN_IF_ERROR(http->Init(options, core, std::move(metrics)));
  return std::unique_ptr<MasterHttp>(std::move(http));
}

std::string ObjectInfoJson(std::string_view key, const ObjectInfo& info) {
  nlohmann::json replicas = nlohmann::json::array();
  for (const auto& r : info.replicas) {
    replicas.push_back({{"segment", r.segment}, {"address", r.address}});
  }
  char crc[9];
  std::snprintf(crc, sizeof(crc), "%08x", info.crc32c);
  nlohmann::json j = {{"key", std::string(key)},
                      {"size", info.size},
                      {"crc32c", crc},
                      {"state", info.complete ? "complete" : "being_written"},
                      {"soft_pin", info.soft_pin},
                      {"lease_ms_left", info.lease_ms},
                      {"replicas", replicas}};
  return j.dump();
}

std::string SegmentsJson(const std::vector<SegmentInfo>& segments) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& s : segments) {
    arr.push_back({{"name", s.spec.name},
                   {"base", s.spec.base},
                   {"size", s.spec.size},
                   {"owner", s.owner},
                   {"allocated", s.allocated},
                   {"largest_free", s.largest_free},
                   {"free_blocks", s.free_blocks}});
  }
  return nlohmann::json{{"segments", arr}}.dump();
}

}  // namespace crescent::store
