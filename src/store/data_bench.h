// Data-path throughput of the store beside Redis, for `crescent
// store-bench`: put and get of each value size at each client count, N
// runs each, medians reported. Store clients are threads sharing one
// Client and putting from / getting into registered buffers (PutFrom /
// GetInto); the Redis reference is redis-benchmark (SET then GET of one
// key, one request in flight per connection) with the same sizes, client
// counts and operation counts, run right after each of our runs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/client.h"

namespace crescent::store {

struct DataBenchOptions {
  std::vector<uint64_t> sizes = {4096, 256 << 10, 1 << 20};
  std::vector<int> clients = {1, 8, 32};
  int runs = 3;
  // Unmeasured runs first (both systems): fresh buffers and mappings fault
  // their pages in, which on VMs costs ~10 us per page.
  int warmup_runs = 1;
  // Each run moves about this many bytes per phase (fewer ops for large
  // values), at most max_ops and at least min_ops operations.
  uint64_t bytes_per_run = 256ull << 20;
  uint64_t max_ops = 40000;
  uint64_t min_ops = 64;
  // Waited between runs so that the reads' leases end and RemoveAll can
  // clear the pool (the bench's master runs with a short lease).
  int64_t settle_ms = 0;
};

// One row per (op, size, clients).
struct DataBenchRow {
  std::string op;  // "put" or "get"
  uint64_t size = 0;
  int clients = 0;
  double crescent_ops = 0;  // ops/s, median over runs
  double redis_ops = 0;     // SET or GET ops/s, median over runs; 0 without Redis
  double ratio = 0;         // median of crescent/redis over back-to-back run pairs
};

// Runs every point against our store and, when `redis_port` is not 0, the
// redis-server listening there, alternating the two systems run by run.
StatusOr<std::vector<DataBenchRow>> RunDataBench(Client& client, uint16_t redis_port,
                                                 const DataBenchOptions& options);

}  // namespace crescent::store
