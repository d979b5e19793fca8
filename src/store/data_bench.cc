#include "store/data_bench.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include "common/logging.h"
#include "store/master_client.h"

namespace crescent::store {
namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

uint64_t OpsFor(const DataBenchOptions& o, uint64_t size) {
  return std::clamp<uint64_t>(o.bytes_per_run / size, o.min_ops, o.max_ops);
}

// Runs body(thread, i) for i in [0, ops) split over `threads`; returns the
// seconds it took, or the first error.
StatusOr<double> Timed(int threads, uint64_t ops, const std::function<Status(int, uint64_t)>& body) {
  std::atomic<uint64_t> next{0};
  std::mutex mu;
  Status first;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (uint64_t i = next++; i < ops; i = next++) {
        Status s = body(t, i);
        if (!s.ok()) {
          std::lock_guard lock(mu);
          if (first.ok()) first = s;
          next = ops;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  if (!first.ok()) return first;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<uint8_t> Pattern(uint64_t size, uint64_t seed) {
  std::vector<uint8_t> v(size);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i + 8 <= size; i += 8) {
    uint64_t x = rng();
    std::memcpy(&v[i], &x, 8);
  }
  return v;
}

// One measured pass of our store: `ops` puts then `ops` gets of distinct keys.
StatusOr<std::pair<double, double>> StoreRun(Client& client, uint64_t size, int clients,
                                             uint64_t ops, const std::string& prefix,
                                             std::vector<std::vector<uint8_t>>& src,
                                             std::vector<std::vector<uint8_t>>& dst) {
  ASSIGN_OR_RETURN(double put_s, Timed(clients, ops, [&](int t, uint64_t i) {
    return client.PutFrom(prefix + std::to_string(i), ConstBuffer{src[t].data(), size});
  }));
  ASSIGN_OR_RETURN(double get_s, Timed(clients, ops, [&](int t, uint64_t i) -> Status {
    auto r = client.GetInto(prefix + std::to_string(i), MutableBuffer{dst[t].data(), size});
    return r.status();
  }));
  return std::pair{double(ops) / put_s, double(ops) / get_s};
}

// One pass of redis-benchmark: SET then GET of one key (random keys would
// make most GETs misses), one request in flight per connection, as our
// clients do.
StatusOr<std::pair<double, double>> RedisRun(uint16_t port, uint64_t size, int clients,
                                             uint64_t ops) {
  const std::string cmd = "redis-benchmark -h 127.0.0.1 -p " + std::to_string(port) +
                          " -t set,get -d " + std::to_string(size) + " -n " + std::to_string(ops) +
                          " -c " + std::to_string(clients) + " --csv 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return ErrnoToStatus(errno, "running redis-benchmark");
  char line[512];
  std::vector<double> set_rps, get_rps;
  while (std::fgets(line, sizeof(line), pipe)) {
    double rps = 0;
    if (std::sscanf(line, "\"SET\",\"%lf\"", &rps) == 1) set_rps.push_back(rps);
    if (std::sscanf(line, "\"GET\",\"%lf\"", &rps) == 1) get_rps.push_back(rps);
  }
  if (pclose(pipe) != 0 || set_rps.size() != 1 || get_rps.size() != 1) {
    return UnavailableError("redis-benchmark against 127.0.0.1:" + std::to_string(port) +
                            " failed; is redis-tools installed and redis-server running?");
  }
  redisContext* c = redisConnect("127.0.0.1", port);
  if (c != nullptr && !c->err) freeReplyObject(redisCommand(c, "FLUSHALL"));
  if (c != nullptr) redisFree(c);
  return std::pair{set_rps[0], get_rps[0]};
}

}  // namespace

StatusOr<std::vector<DataBenchRow>> RunDataBench(Client& client, uint16_t redis_port,
                                                 const DataBenchOptions& o) {
  std::vector<DataBenchRow> rows;
  for (uint64_t size : o.sizes) {
    for (int clients : o.clients) {
      // Per thread: a registered source (put) and destination (get).
      std::vector<std::vector<uint8_t>> src(clients), dst(clients);
      for (int t = 0; t < clients; ++t) {
        src[t] = Pattern(size, 1000 + t);
        dst[t].resize(size);
        RETURN_IF_ERROR(client.RegisterBuffer(src[t].data(), size));
        RETURN_IF_ERROR(client.RegisterBuffer(dst[t].data(), size));
      }
      const uint64_t ops = OpsFor(o, size);
      // Runs alternate between the systems, so that a slow spell of a shared
      // machine falls on both; the ratio is the median of back-to-back pairs.
      std::vector<double> put_ops, get_ops, set_ops, redis_get_ops, put_ratio, get_ratio;
      for (int run = -o.warmup_runs; run < o.runs; ++run) {
        const std::string prefix = "bench/" + std::to_string(size) + "/" +
                                   std::to_string(clients) + "/" + std::to_string(run) + "/";
        ASSIGN_OR_RETURN(auto ours, StoreRun(client, size, clients, ops, prefix, src, dst));
        std::this_thread::sleep_for(std::chrono::milliseconds(o.settle_ms));
        client.RemoveAll().status().IgnoreError();
        std::pair<double, double> theirs{0, 0};
        if (redis_port != 0) {
          ASSIGN_OR_RETURN(theirs, RedisRun(redis_port, size, clients, ops));
        }
        if (run < 0) continue;
        put_ops.push_back(ours.first);
        get_ops.push_back(ours.second);
        set_ops.push_back(theirs.first);
        redis_get_ops.push_back(theirs.second);
        if (redis_port != 0) {
          put_ratio.push_back(ours.first / theirs.first);
          get_ratio.push_back(ours.second / theirs.second);
        }
      }
      for (int t = 0; t < clients; ++t) {
        client.UnregisterBuffer(src[t].data()).IgnoreError();
        client.UnregisterBuffer(dst[t].data()).IgnoreError();
      }
      const DataBenchRow put{"put", size, clients, Median(put_ops),
                             Median(set_ops), Median(put_ratio)};
      const DataBenchRow get{"get", size, clients, Median(get_ops),
                             Median(redis_get_ops), Median(get_ratio)};
      rows.push_back(put);
      rows.push_back(get);
      spdlog::info("store-bench: {} B x {} clients: put {:.0f}/s (redis SET {:.0f}/s), "
                   "get {:.0f}/s (redis GET {:.0f}/s)",
                   size, clients, put.crescent_ops, put.redis_ops, get.crescent_ops, get.redis_ops);
    }
  }
  return rows;
}

}  // namespace crescent::store
