// Metadata throughput of the master: puts (PutStart + PutEnd), gets
// (GetReplicaList) and Exist, one by one and in batches, from N threads,
// against the logic alone (in-process MasterCore) or over gRPC. Used by
// `crescent store-bench --mode master`; no object bytes move.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace crescent::store {

struct MasterBenchOptions {
  std::string master_address;  // "" : the in-process MasterCore (no I/O)
  int threads = 2;
  uint64_t keys_per_thread = 20000;
  int batch = 128;             // items per batch RPC
  uint64_t value_size = 4096;  // what each put allocates
  bool use_fast_port = true;   // false: gRPC for every call
};

struct MasterBenchResult {
  std::string op;       // "put", "get", "exist", "batch_put", "batch_get", "batch_exist"
  double ops_per_s = 0;  // objects per second (a put = PutStart + PutEnd)
  double rpcs_per_s = 0; // RPCs (or core calls) per second
};

StatusOr<std::vector<MasterBenchResult>> RunMasterBench(const MasterBenchOptions& options);

}  // namespace crescent::store
