// mooncake.json: the store/transfer settings every instance reads.
//
// Same file and field names as the Mooncake store, so a user's existing
// config works unchanged:
//   {"local_hostname": "192.168.0.137",
//    "metadata_server": "etcd://192.168.0.137:2379",
//    "protocol": "tcp", "device_name": "",
//    "master_server_address": "192.168.0.137:50001",
//    "global_segment_size": "3.125GB", "local_buffer_size": 1073741824}
// Sizes may be numbers or strings in the forms of common/size.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace crescent {

// Where the transfer engine's metadata (segment descriptors) lives, parsed
// from the metadata_server string:
//   "http://h:p/metadata"            -> kHttp  (embedded metadata service)
//   "etcd://h1:p1,h2:p2" or "h:p"    -> kEtcd  (etcd v3 API)
//   "redis://h:p"                    -> kRedis
struct MetadataServerSpec {
  enum class Kind { kHttp, kEtcd, kRedis };
  Kind kind = Kind::kHttp;
  // host:port pairs; one for http and redis, one or more for etcd.
  std::vector<std::pair<std::string, uint16_t>> endpoints;
  std::string http_path;  // kHttp only: "/metadata"
  std::string original;   // the string as written, for messages
};

StatusOr<MetadataServerSpec> ParseMetadataServer(std::string_view text);

// "host:port" (IPv4, name, or [v6]:port). Errors name `field` and the form.
StatusOr<std::pair<std::string, uint16_t>> ParseHostPort(std::string_view text,
                                                          std::string_view field);

struct MooncakeConfig {
  std::string local_hostname = "127.0.0.1";
  std::string metadata_server;       // required
  std::string protocol = "tcp";      // "tcp" (shm is chosen automatically on one host)
  std::string device_name;           // rdma only
  std::string master_server_address = "127.0.0.1:50051";
  uint64_t global_segment_size = 3355443200ull;  // bytes contributed to the pool
  uint64_t local_buffer_size = 1073741824ull;    // registered buffer for zero-copy I/O
  MetadataServerSpec metadata;       // parsed metadata_server
  std::string source;                // file it came from, for messages
};

// Parses and validates JSON text. Every error names the field and the fix.
StatusOr<MooncakeConfig> ParseMooncakeConfig(std::string_view json_text,
                                             std::string_view source = "mooncake.json");

// Loads from `path`, or when empty from $MOONCAKE_CONFIG_PATH; an error
// says which of the two was tried.
StatusOr<MooncakeConfig> LoadMooncakeConfig(std::string_view path = {});

// Reads a whole file.
StatusOr<std::string> ReadFile(std::string_view path);

}  // namespace crescent
