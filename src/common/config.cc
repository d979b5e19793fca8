#include "common/config.h"

#include <dirent.h>
#include <fmt/format.h>

#include <charconv>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/logging.h"
#include "common/size.h"

namespace crescent {

StatusOr<std::string> ReadFile(std::string_view path) {
  std::ifstream in{std::string(path), std::ios::binary};
  if (!in) return ErrnoToStatus(errno, fmt::format("cannot open {}", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

StatusOr<std::pair<std::string, uint16_t>> ParseHostPort(std::string_view text,
                                                          std::string_view field) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError(fmt::format(
        "{}: '{}' {}; write host:port, e.g. \"127.0.0.1:50051\"", field, text, why));
  };
  if (text.empty()) return bad("is empty");
  std::string_view host, port;
  if (text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return bad("is not [v6addr]:port");
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad("has no port");
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (host.empty()) return bad("has no host");
  unsigned p = 0;
  auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || ptr != port.data() + port.size() || p == 0 || p > 65535)
    return bad("has an invalid port (1-65535)");
  return std::make_pair(std::string(host), static_cast<uint16_t>(p));
}

StatusOr<MetadataServerSpec> ParseMetadataServer(std::string_view text) {
  MetadataServerSpec spec;
  spec.original = std::string(text);
  constexpr std::string_view kField = "metadata_server";
  if (text.empty())
    return InvalidArgumentError(
        "metadata_server is empty; set it to \"http://host:8080/metadata\" (crescent master "
        "--enable-http-metadata-server), \"etcd://host:2379\" or \"redis://host:6379\"");
  if (text.starts_with("http://")) {
    spec.kind = MetadataServerSpec::Kind::kHttp;
    std::string_view rest = text.substr(7);
    size_t slash = rest.find('/');
    std::string_view hp = rest.substr(0, slash);
    spec.http_path = slash == std::string_view::npos ? "/metadata" : std::string(rest.substr(slash));
    ASSIGN_OR_RETURN(auto ep, ParseHostPort(hp, kField));
    spec.endpoints.push_back(std::move(ep));
    return spec;
  }
  if (text.starts_with("https://"))
    return InvalidArgumentError(
        "metadata_server: https is not supported by the embedded metadata service; use http://");
  if (text.starts_with("redis://")) {
    spec.kind = MetadataServerSpec::Kind::kRedis;
    std::string_view rest = text.substr(8);
    while (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
    ASSIGN_OR_RETURN(auto ep, ParseHostPort(rest, kField));
    spec.endpoints.push_back(std::move(ep));
    return spec;
  }
  std::string_view rest = text;
  if (text.starts_with("etcd://")) rest = text.substr(7);
  else if (text.find("://") != std::string_view::npos)
    return InvalidArgumentError(fmt::format(
        "metadata_server: unknown scheme in '{}'; use http://h:p/metadata, etcd://h:p[,h:p] or "
        "redis://h:p",
        text));
  spec.kind = MetadataServerSpec::Kind::kEtcd;
  while (!rest.empty()) {
    size_t comma = rest.find(',');
    std::string_view one = rest.substr(0, comma);
    ASSIGN_OR_RETURN(auto ep, ParseHostPort(one, kField));
    spec.endpoints.push_back(std::move(ep));
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  if (spec.endpoints.empty()) return InvalidArgumentError("metadata_server: no etcd endpoint");
  return spec;
}

namespace {

bool HostHasRdmaDevices() {
  DIR* d = opendir("/sys/class/infiniband");
  if (!d) return false;
  bool any = false;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') any = true;
  }
  closedir(d);
  return any;
}

StatusOr<uint64_t> SizeField(const nlohmann::json& j, const char* field) {
  const auto& v = j.at(field);
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  if (v.is_number_float() && v.get<double>() >= 0) return static_cast<uint64_t>(v.get<double>());
  if (v.is_string()) {
    auto r = ParseSize(v.get<std::string>());
    if (!r.ok()) return r.status().WithContext(field);
    return r;
  }
  return InvalidArgumentError(
      fmt::format("{} must be a size (bytes as a number, or a string like \"3.125GB\")", field));
}

}  // namespace

StatusOr<MooncakeConfig> ParseMooncakeConfig(std::string_view json_text, std::string_view source) {
  MooncakeConfig cfg;
  cfg.source = std::string(source);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    return InvalidArgumentError(fmt::format("{}: not valid JSON: {}", source, e.what()));
  }
  if (!j.is_object())
    return InvalidArgumentError(fmt::format("{}: must be a JSON object", source));
  auto ctx = [&](const Status& s) { return s.WithContext(source); };
  auto str = [&](const char* field, std::string& out) -> Status {
    if (!j.contains(field) || j[field].is_null()) return OkStatus();
    if (!j[field].is_string())
      return InvalidArgumentError(fmt::format("{}: {} must be a string", source, field));
    out = j[field].get<std::string>();
    return OkStatus();
  };
  static const char* kKnown[] = {"local_hostname",  "metadata_server",     "protocol",
                                 "device_name",     "master_server_address",
                                 "global_segment_size", "local_buffer_size"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (const char* k : kKnown) known |= it.key() == k;
    if (!known)
      spdlog::warn("{}: ignoring unknown field '{}'", source, it.key());
  }
  RETURN_IF_ERROR(str("local_hostname", cfg.local_hostname));
  RETURN_IF_ERROR(str("metadata_server", cfg.metadata_server));
  RETURN_IF_ERROR(str("protocol", cfg.protocol));
  RETURN_IF_ERROR(str("device_name", cfg.device_name));
  RETURN_IF_ERROR(str("master_server_address", cfg.master_server_address));
  if (j.contains("global_segment_size")) {
    auto r = SizeField(j, "global_segment_size");
    if (!r.ok()) return ctx(r.status());
    cfg.global_segment_size = *r;
  }
  if (j.contains("local_buffer_size")) {
    auto r = SizeField(j, "local_buffer_size");
    if (!r.ok()) return ctx(r.status());
    cfg.local_buffer_size = *r;
  }
  if (cfg.local_hostname.empty())
    return InvalidArgumentError(fmt::format(
        "{}: local_hostname is empty; set it to this host's address as peers reach it, e.g. "
        "\"127.0.0.1\" on one machine",
        source));
  if (cfg.metadata_server.empty())
    return InvalidArgumentError(fmt::format(
        "{}: metadata_server is missing; set it to \"http://127.0.0.1:8080/metadata\" (crescent "
        "master --enable-http-metadata-server), \"etcd://host:2379\" or \"redis://host:6379\"",
        source));
  {
    auto r = ParseMetadataServer(cfg.metadata_server);
    if (!r.ok()) return ctx(r.status());
    cfg.metadata = std::move(*r);
  }
  if (cfg.protocol == "rdma") {
    if (!HostHasRdmaDevices())
      return InvalidArgumentError(fmt::format(
          "{}: protocol \"rdma\" but this host has no RDMA devices (/sys/class/infiniband is "
          "empty); use \"protocol\": \"tcp\"",
          source));
    if (cfg.device_name.empty())
      return InvalidArgumentError(fmt::format(
          "{}: protocol \"rdma\" needs device_name (comma-separated NICs, e.g. \"mlx5_0,mlx5_1\")",
          source));
    return UnimplementedError(fmt::format(
        "{}: protocol \"rdma\" is not supported by this build of crescent yet; use \"protocol\": "
        "\"tcp\" (same-host peers use shared memory automatically)",
        source));
  }
  if (cfg.protocol != "tcp")
    return InvalidArgumentError(fmt::format(
        "{}: protocol \"{}\" is unknown; use \"tcp\" (or \"rdma\" on hosts with RDMA NICs)",
        source, cfg.protocol));
  {
    auto r = ParseHostPort(cfg.master_server_address, "master_server_address");
    if (!r.ok()) return ctx(r.status());
  }
  if (cfg.global_segment_size > 0 && cfg.global_segment_size < 4096)
    return InvalidArgumentError(fmt::format(
        "{}: global_segment_size {} is too small; use at least 4KB, or 0 to contribute no memory",
        source, cfg.global_segment_size));
  return cfg;
}

StatusOr<MooncakeConfig> LoadMooncakeConfig(std::string_view path) {
  std::string p(path);
  if (p.empty()) {
    const char* env = std::getenv("MOONCAKE_CONFIG_PATH");
    if (!env || !*env)
      return FailedPreconditionError(
          "no store config: set MOONCAKE_CONFIG_PATH=/path/to/mooncake.json or pass --config");
    p = env;
  }
  auto text = ReadFile(p);
  if (!text.ok())
    return text.status().WithContext(
        path.empty() ? "MOONCAKE_CONFIG_PATH" : "--config");
  return ParseMooncakeConfig(*text, p);
}

}  // namespace crescent
