// MasterServer: `crescent master`, the MasterCore behind gRPC.
//
// Serves the Master service of proto/master.proto on --port, ticks the
// core's clock every tick_interval_ms (puts reclaimed, clients expired,
// eviction above the watermark) and, on --metrics-port, HTTP:
//   /metrics               Prometheus text (keys, bytes, per-RPC requests and
//                          failures, evictions, clients)
//   /health                200 "ok" while serving
//   /query_key?key=K       the object's replicas, size, checksum, lease (JSON)
//   /segments              mounted segments and their usage (JSON)
// With --enable-http-metadata-server it also hosts the transfer engine's
// metadata service on --http-metadata-server-port.
//
// gRPC stays out of this header (see master_server.cc).
//
// Thread safety: Start returns a running server; Shutdown may be called
// from any thread (e.g. a signal watcher), Wait from another.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"
#include "store/master.h"
#include "store/store_format.h"

namespace crescent::store {

struct MasterServerOptions {
  std::string host = "0.0.0.0";               // listen address for gRPC and HTTP
  uint16_t port = kDefaultMasterPort;         // gRPC; 0 picks a free port
  // The fast port (fast_wire.h: the hot RPCs without gRPC's cost), which
  // clients discover through Health. Unset: port + 1, or a free port when
  // that is taken; 0: a free port; -1: off.
  std::optional<int> fast_port;
  MasterOptions master;                       // eviction, leases, client ttl
  std::string cluster_id = "crescent";        // namespaces the metadata keys
  bool enable_http_metadata_server = false;
  uint16_t http_metadata_server_port = kDefaultHttpMetadataPort;
  uint16_t metrics_port = kDefaultMetricsPort;  // 0 picks a free port
  bool enable_metrics = true;
  int64_t tick_interval_ms = 100;
  int rpc_threads = 2;  // gRPC completion-queue threads
};

// Reads a --config file (JSON) with the same keys as the flags, snake_case
// or as spelled on the command line: {"port": 50051,
// "eviction_high_watermark_ratio": 0.9, "eviction_ratio": 0.05,
// "default_kv_lease_ttl": 10000, "client_ttl": 10, "cluster_id": "c",
// "enable_http_metadata_server": true, "http_metadata_server_port": 8080,
// "metrics_port": 9003, "put_timeout": 30000, "fast_port": 50052}. Unknown keys are errors
// that name the key. Values not in the file stay as in `base`.
StatusOr<MasterServerOptions> LoadMasterConfig(std::string_view path,
                                               const MasterServerOptions& base);
// Range checks shared by flags and files (ratios in (0, 1], ttls > 0).
Status ValidateMasterOptions(const MasterServerOptions& options);

class MasterServer {
 public:
  static StatusOr<std::unique_ptr<MasterServer>> Start(const MasterServerOptions& options);
  virtual ~MasterServer() = default;  // Shutdown()s

  virtual uint16_t port() const = 0;
  virtual uint16_t metrics_port() const = 0;  // 0 when disabled
  virtual uint16_t fast_port() const = 0;     // 0 when off
  // "http://host:port/metadata" of the hosted metadata service, "" when off.
  virtual std::string metadata_url() const = 0;
  // Random per process start: clients notice a restart by it changing.
  virtual const std::string& master_id() const = 0;
  virtual MasterCore& core() = 0;
  // Prometheus text, as /metrics serves it.
  virtual std::string RenderMetrics() = 0;

  virtual void Shutdown() = 0;
  // Blocks until Shutdown.
  virtual void Wait() = 0;
};

}  // namespace crescent::store
