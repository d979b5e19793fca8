// The gRPC Master service over a MasterCore, with per-RPC counters.
// Internal to src/store: master_server.cc serves it; tests and the
// store-bench may embed it in-process.
#pragma once

#include <memory>
#include <string>

#include "store/master.h"
#include "store/rpc_counters.h"
#include "store/proto/master.grpc.pb.h"

namespace crescent::store {

// `core` and `counters` must outlive the service.
std::unique_ptr<rpc::Master::CallbackService> NewMasterService(MasterCore* core,
                                                                RpcCounters* counters,
                                                                std::string master_id,
                                                                std::string cluster_id,
                                                                int64_t client_ttl_ms,
                                                                uint16_t fast_port,
                                                                std::string fast_unix);

}  // namespace crescent::store
