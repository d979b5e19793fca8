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

void AddRows(std::vector<DataBenchRow>* rows, const std::string& system, uint64_t size,
             int clients, const std::vector<double>& put_ops, const std::vector<double>& get_ops) {
  for (auto [op, v] : {std::pair{"put", &put_ops}, std::pair{"get", &get_ops}}) {
    const double ops = Median(*v);
    rows->push_back({system, op, size, clients, ops, ops * double(size) / 1e9});
  }
}

}  // namespace

StatusOr<std::vector<DataBenchRow>> RunStoreDataBench(Client& client, const DataBenchOptions& o) {
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
      std::vector<double> put_ops, get_ops;
      for (int run = -o.warmup_runs; run < o.runs; ++run) {
        const std::string prefix = "bench/" + std::to_string(size) + "/" +
                                   std::to_string(clients) + "/" + std::to_string(run) + "/";
        ASSIGN_OR_RETURN(double put_s, Timed(clients, ops, [&](int t, uint64_t i) {
          return client.PutFrom(prefix + std::to_string(i), ConstBuffer{src[t].data(), size});
        }));
        ASSIGN_OR_RETURN(double get_s, Timed(clients, ops, [&](int t, uint64_t i) -> Status {
          auto r = client.GetInto(prefix + std::to_string(i), MutableBuffer{dst[t].data(), size});
          return r.status();
        }));
        if (run >= 0) {
          put_ops.push_back(double(ops) / put_s);
          get_ops.push_back(double(ops) / get_s);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(o.settle_ms));
        client.RemoveAll().status().IgnoreError();
      }
      for (int t = 0; t < clients; ++t) {
        client.UnregisterBuffer(src[t].data()).IgnoreError();
        client.UnregisterBuffer(dst[t].data()).IgnoreError();
      }
      AddRows(&rows, "crescent", size, clients, put_ops, get_ops);
      spdlog::info("store-bench: crescent {} B x {} clients: put {:.0f}/s get {:.0f}/s", size,
                   clients, Median(put_ops), Median(get_ops));
    }
  }
  return rows;
}

StatusOr<std::vector<DataBenchRow>> RunRedisDataBench(const std::string& host, uint16_t port,
                                                      const DataBenchOptions& o) {
  // The reference is redis-benchmark itself (the tool Redis is usually
  // measured with): SET then GET of one key (random keys would make most
  // GETs misses), one request in flight per connection, as our clients do.
  std::vector<DataBenchRow> rows;
  for (uint64_t size : o.sizes) {
    for (int clients : o.clients) {
      const uint64_t ops = OpsFor(o, size);
      std::vector<double> put_ops, get_ops;
      for (int run = -o.warmup_runs; run < o.runs; ++run) {
        const std::string cmd = "redis-benchmark -h " + host + " -p " + std::to_string(port) +
                                " -t set,get -d " + std::to_string(size) + " -n " +
                                std::to_string(ops) + " -c " + std::to_string(clients) +
                                " --csv 2>/dev/null";
        FILE* pipe = popen(cmd.c_str(), "r");
        if (pipe == nullptr) return ErrnoToStatus(errno, "running redis-benchmark");
        char line[512];
        std::vector<double> set_rps, get_rps;
        while (std::fgets(line, sizeof(line), pipe)) {
          double rps = 0;
          if (std::sscanf(line, "\"SET\",\"%lf\"", &rps) == 1) set_rps.push_back(rps);
          if (std::sscanf(line, "\"GET\",\"%lf\"", &rps) == 1) get_rps.push_back(rps);
        }
        if (run >= 0) {
          put_ops.insert(put_ops.end(), set_rps.begin(), set_rps.end());
          get_ops.insert(get_ops.end(), get_rps.begin(), get_rps.end());
        }
        if (pclose(pipe) != 0 || set_rps.size() != 1 || get_rps.size() != 1) {
          return UnavailableError("redis-benchmark against " + host + ":" + std::to_string(port) +
                                  " failed; is redis-tools installed and redis-server running?");
        }
        redisContext* c = redisConnect(host.c_str(), port);
        if (c != nullptr && !c->err) freeReplyObject(redisCommand(c, "FLUSHALL"));
        if (c != nullptr) redisFree(c);
      }
      AddRows(&rows, "redis", size, clients, put_ops, get_ops);
      spdlog::info("store-bench: redis {} B x {} clients: SET {:.0f}/s GET {:.0f}/s", size, clients,
                   Median(put_ops), Median(get_ops));
    }
  }
  return rows;
}

}  // namespace crescent::store
