// The gRPC Master service over a MasterCore, with per-RPC counters.
// Internal to src/store: master_server.cc serves it; tests and the
// store-bench may embed it in-process.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <string>

#include "store/master.h"
#include "store/proto/master.grpc.pb.h"

namespace crescent::store {

enum class MasterRpc : int {
  kPutStart, kPutEnd, kPutRevoke, kGetReplicaList, kExist, kRemove, kRemoveAll,
  kBatchPutStart, kBatchPutEnd, kBatchPutRevoke, kBatchGetReplicaList, kBatchExist,
  kBatchRemove, kMountSegment, kUnmountSegment, kPing, kHealth, kQueryKey, kListSegments,
  kListKeys, kCount
};
const char* MasterRpcName(MasterRpc rpc);

struct RpcCounters {
  std::array<std::atomic<uint64_t>, static_cast<int>(MasterRpc::kCount)> requests{};
  // Requests whose (or any of whose batch items') outcome was not OK.
  std::array<std::atomic<uint64_t>, static_cast<int>(MasterRpc::kCount)> failures{};
  // Items carried by batch RPCs (metadata operations, not RPCs).
  std::array<std::atomic<uint64_t>, static_cast<int>(MasterRpc::kCount)> items{};
};

// `core` and `counters` must outlive the service.
std::unique_ptr<rpc::Master::CallbackService> NewMasterService(MasterCore* core,
                                                                RpcCounters* counters,
                                                                std::string master_id,
                                                                std::string cluster_id,
                                                                int64_t client_ttl_ms);

}  // namespace crescent::store
