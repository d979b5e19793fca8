// The master's HTTP side (internal to src/store; MasterServer owns it):
// /metrics, /health, /query_key?key=K and /segments on the metrics port,
// and the transfer engine's metadata service when enabled.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/status.h"
#include "store/master.h"
#include "store/master_server.h"

namespace crescent::store {

class MasterHttp {
 public:
  // `core` must outlive the result; `metrics` renders /metrics.
  static StatusOr<std::unique_ptr<MasterHttp>> Start(const MasterServerOptions& options,
                                                     MasterCore* core,
                                                     std::function<std::string()> metrics);
  virtual ~MasterHttp() = default;  // stops the servers
  virtual uint16_t metrics_port() const = 0;           // 0 when disabled
  virtual uint16_t metadata_port() const = 0;          // 0 when disabled
};

// JSON bodies of /query_key and /segments (also used by tests).
std::string ObjectInfoJson(std::string_view key, const ObjectInfo& info);
std::string SegmentsJson(const std::vector<SegmentInfo>& segments);

}  // namespace crescent::store
