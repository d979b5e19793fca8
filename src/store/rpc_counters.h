// Per-method counters of the master's RPCs, shared by the gRPC service and
// the fast port (master_fast_server.h); /metrics renders them.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

namespace crescent::store {

enum class MasterRpc : int {
  kPutStart, kPutEnd, kPutRevoke, kGetReplicaList, kExist, kRemove, kRemoveAll,
  kBatchPutStart, kBatchPutEnd, kBatchPutRevoke, kBatchGetReplicaList, kBatchExist,
  kBatchRemove, kMountSegment, kUnmountSegment, kPing, kHealth, kQueryKey, kListSegments,
  kListKeys, kReserve, kCommit, kRelease, kCount
};
const char* MasterRpcName(MasterRpc rpc);

struct RpcCounters {
  std::array<std::atomic<uint64_t>, static_cast<int>(MasterRpc::kCount)> requests{};
  // Requests whose (or any of whose batch items') outcome was not OK.
  std::array<std::atomic<uint64_t>, static_cast<int>(MasterRpc::kCount)> failures{};
  // Items carried by batch RPCs (metadata operations, not RPCs).
  std::array<std::atomic<uint64_t>, static_cast<int>(MasterRpc::kCount)> items{};
};

}  // namespace crescent::store
