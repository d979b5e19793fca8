// --config files for `crescent master` and the checks shared with flags.
#include <nlohmann/json.hpp>

#include "common/config.h"
#include "store/master_server.h"

namespace crescent::store {
namespace {

// "--eviction-ratio" / "eviction-ratio" / "eviction_ratio" -> "eviction_ratio".
std::string NormalizeKey(std::string key) {
  while (!key.empty() && key.front() == '-') key.erase(key.begin());
  for (char& c : key) {
    if (c == '-') c = '_';
  }
  return key;
}

template <typename T>
Status Read(const nlohmann::json& v, std::string_view key, std::string_view path, T* out) {
  try {
    *out = v.get<T>();
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string(path) + ": key '" + std::string(key) +
                                "' has the wrong type (" + e.what() + ")");
  }
  return OkStatus();
}

}  // namespace

StatusOr<MasterServerOptions> LoadMasterConfig(std::string_view path,
                                               const MasterServerOptions& base) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    return InvalidArgumentError(std::string(path) + ": not valid JSON (" + e.what() +
                                "); --config takes a JSON object of master flags");
  }
  if (!doc.is_object()) {
    return InvalidArgumentError(std::string(path) + ": expected a JSON object of master flags");
  }
  MasterServerOptions o = base;
  for (const auto& [raw_key, v] : doc.items()) {
    const std::string key = NormalizeKey(raw_key);
    int64_t i = 0;
    if (key == "port" || key == "rpc_port") {
      RETURN_IF_ERROR(Read(v, key, path, &i));
      o.port = static_cast<uint16_t>(i);
    } else if (key == "host" || key == "rpc_address" || key == "rpc_bind_address") {
      RETURN_IF_ERROR(Read(v, key, path, &o.host));
    } else if (key == "eviction_high_watermark_ratio") {
      RETURN_IF_ERROR(Read(v, key, path, &o.master.eviction_high_watermark_ratio));
    } else if (key == "eviction_ratio") {
      RETURN_IF_ERROR(Read(v, key, path, &o.master.eviction_ratio));
    } else if (key == "default_kv_lease_ttl") {
      RETURN_IF_ERROR(Read(v, key, path, &o.master.default_kv_lease_ttl_ms));
    } else if (key == "client_ttl") {
      RETURN_IF_ERROR(Read(v, key, path, &i));
      o.master.client_ttl_ms = i * 1000;
    } else if (key == "put_timeout") {
      RETURN_IF_ERROR(Read(v, key, path, &o.master.put_timeout_ms));
    } else if (key == "cluster_id") {
      RETURN_IF_ERROR(Read(v, key, path, &o.cluster_id));
    } else if (key == "enable_http_metadata_server") {
      RETURN_IF_ERROR(Read(v, key, path, &o.enable_http_metadata_server));
    } else if (key == "http_metadata_server_port") {
      RETURN_IF_ERROR(Read(v, key, path, &i));
      o.http_metadata_server_port = static_cast<uint16_t>(i);
    } else if (key == "metrics_port") {
      RETURN_IF_ERROR(Read(v, key, path, &i));
      o.metrics_port = static_cast<uint16_t>(i);
    } else if (key == "fast_port") {
      RETURN_IF_ERROR(Read(v, key, path, &i));
      o.fast_port = static_cast<int>(i);
    } else if (key == "enable_metric_reporting" || key == "enable_metrics") {
      RETURN_IF_ERROR(Read(v, key, path, &o.enable_metrics));
    } else {
      return InvalidArgumentError(std::string(path) + ": unknown key '" + raw_key +
                                  "'; known: port, eviction_high_watermark_ratio, eviction_ratio, "
                                  "default_kv_lease_ttl, client_ttl, put_timeout, cluster_id, fast_port, "
                                  "enable_http_metadata_server, http_metadata_server_port, "
                                  "metrics_port");
    }
  }
  RETURN_IF_ERROR(ValidateMasterOptions(o));
  return o;
}

Status ValidateMasterOptions(const MasterServerOptions& o) {
  const auto& m = o.master;
  if (!(m.eviction_high_watermark_ratio > 0 && m.eviction_high_watermark_ratio <= 1)) {
    return InvalidArgumentError("eviction_high_watermark_ratio must be in (0, 1], got " +
                                std::to_string(m.eviction_high_watermark_ratio));
  }
  if (!(m.eviction_ratio > 0 && m.eviction_ratio <= 1)) {
    return InvalidArgumentError("eviction_ratio must be in (0, 1], got " +
                                std::to_string(m.eviction_ratio));
  }
  if (m.default_kv_lease_ttl_ms <= 0) {
    return InvalidArgumentError("default_kv_lease_ttl must be > 0 ms");
  }
  if (m.client_ttl_ms <= 0) return InvalidArgumentError("client_ttl must be > 0 s");
  if (m.put_timeout_ms <= 0) return InvalidArgumentError("put_timeout must be > 0 ms");
  if (o.cluster_id.empty()) return InvalidArgumentError("cluster_id must not be empty");
  return OkStatus();
}

}  // namespace crescent::store
