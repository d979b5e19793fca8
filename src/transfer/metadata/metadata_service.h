// The embedded HTTP metadata service: a key-value map with leases, served
// over HTTP. Compatible with Mooncake's HTTP metadata server (the first
// three routes), plus leases so that a dead client's entries expire:
//
//   GET    <path>?key=K               200 value | 404
//   PUT    <path>?key=K[&lease=ID]    body = value; 200 | 404 unknown lease
//   DELETE <path>?key=K               200 | 404
//   GET    <path>?prefix=P            200 {"kvs":[{"key":b64,"value":b64}]}, sorted
//   POST   <path>/lease?ttl_ms=N      200 {"id":"<decimal>","ttl_ms":N}
//   POST   <path>/lease/keepalive?lease=ID   200 {"ttl_ms":N} | 404 expired
//   DELETE <path>/lease?lease=ID      200, its keys are deleted | 404
//
// An entry PUT with a lease belongs to it and disappears when the lease is
// revoked or not kept alive for its ttl; a later PUT of the key (with
// another lease or none) takes it over. The full protocol is in
// docs/metadata.md. Hosted by `crescent metadata-server` and (later)
// `crescent master --enable-http-metadata-server`.
//
// Thread safety: all methods are thread-safe; state is in memory only.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/http.h"

namespace crescent::transfer {

struct MetadataServiceOptions {
  std::string path = "/metadata";  // URL path of the routes above
  // Lease ttls requested by clients are clamped into this range.
  std::chrono::milliseconds min_ttl{100};
  std::chrono::milliseconds max_ttl{std::chrono::hours(24)};
};

class MetadataService {
 public:
  static std::shared_ptr<MetadataService> Create(MetadataServiceOptions options = {});
  virtual ~MetadataService() = default;

  // Adds the routes to `server` (before server.Start()). The routes hold a
  // reference to this service.
  virtual void AddRoutes(http::Server& server) = 0;

  // Live entries / leases now (for /metrics and tests).
  virtual size_t entry_count() = 0;
  virtual size_t lease_count() = 0;
};

}  // namespace crescent::transfer
