// The proxy's Prometheus metrics (text exposition format 0.0.4 on /metrics).
//
// Counters and histograms are lock-free atomics updated on the request
// path; per-instance gauges are read from the Router at scrape time.
// (A shared metrics library was not available when this was written; this
// one stays small and private to the proxy.)
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "proxy/router.h"

namespace crescent::proxy {

// A fixed-bucket latency histogram in seconds.
class LatencyHistogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                     0.05,   0.1,   0.25,   0.5,   1,    2.5,
                                                     5,      10};
  void Observe(double seconds);
  // Appends the _bucket/_sum/_count lines of `name` with `labels` ("" or 'k="v"').
  void Render(std::string& out, std::string_view name, std::string_view labels) const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};  // last: +Inf
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_us_{0};
};

struct ProxyMetrics {
  // Client requests by endpoint (0 completions, 1 chat) and outcome.
  std::atomic<uint64_t> requests_ok[2]{};
  std::atomic<uint64_t> requests_client_error[2]{};  // 4xx from the instance
  std::atomic<uint64_t> requests_failed[2]{};        // 5xx / no instance / broken stream
  std::atomic<uint64_t> streams_broken{0};  // ended with an error event after bytes went out
  std::atomic<uint64_t> client_disconnects{0};
  std::atomic<int64_t> in_flight{0};
  std::atomic<uint64_t> prefill_retries{0};
  std::atomic<uint64_t> prefill_skipped{0};  // decode prefilled itself
  std::atomic<uint64_t> decode_retries{0};
  std::atomic<uint64_t> upstream_failures[2]{};  // by Role
  LatencyHistogram prefill_seconds;
  LatencyHistogram first_byte_seconds;  // client request to first byte out
  LatencyHistogram request_seconds;     // client request to last byte out

  std::string Render(const Router& router) const;
};

}  // namespace crescent::proxy
