// FastServer: the master's hot RPCs over the lean binary protocol of
// fast_wire.h, beside gRPC (which stays the full API).
//
// One epoll thread serves every connection: it reads whatever requests have
// arrived, runs them against the MasterCore (whose own mutex makes each
// call atomic) and writes all their replies with one send per connection.
// On 2 cores this is ~4x the calls/s of the gRPC service and a quarter of
// its latency (docs/benchmarks.md, store section).
//
// A malformed frame (bad length, unknown method, truncated body) gets an
// INVALID_ARGUMENT / UNIMPLEMENTED reply when it can be framed, otherwise
// its connection is closed; other connections are unaffected.
//
// Thread safety: Start returns a running server; the destructor stops it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "store/master.h"
#include "store/rpc_counters.h"

namespace crescent::store {

class FastServer {
 public:
  // Listens on host:port (port 0: any free port) and, when `unix_name` is
  // not empty, on that abstract unix socket (clients on this host skip the
  // TCP stack). `core` and `counters` must outlive the server.
  static StatusOr<std::unique_ptr<FastServer>> Start(const std::string& host, uint16_t port,
                                                     const std::string& unix_name,
                                                     MasterCore* core, RpcCounters* counters);
  virtual ~FastServer() = default;
  virtual uint16_t port() const = 0;
};

}  // namespace crescent::store
