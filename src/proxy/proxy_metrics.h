// The proxy's Prometheus metrics (text exposition format 0.0.4 on /metrics),
// on the shared metrics library (common/metrics.h).
//
// Counters, gauges and histograms live in a registry of the proxy's own (so
// that several proxies in one process, as in tests, keep separate figures);
// the per-instance gauges are read from the Router at scrape time, so that
// an instance that left the router leaves no stale series behind.
//
// Thread safety: updates are lock-free atomics; Render may run anywhere.
#pragma once

#include <string>

#include "common/metrics.h"
#include "proxy/router.h"

namespace crescent::proxy {

struct ProxyMetrics {
  ProxyMetrics();

  enum Outcome { kOk = 0, kClientError = 1, kFailed = 2 };

  metrics::Registry registry;
  // Client requests by endpoint (0 completions, 1 chat) and outcome: ok,
  // client_error (4xx from the instance or the proxy), failed (5xx, no
  // instance, broken stream, client gone).
  metrics::Counter* requests[2][3];
  metrics::Gauge* in_flight;
  metrics::Counter* streams_broken;  // ended with an error event after bytes went out
  metrics::Counter* client_disconnects;
  metrics::Counter* retries[2];            // by Role
  metrics::Counter* prefill_skipped;       // decode prefilled itself
  metrics::Counter* upstream_failures[2];  // by Role
  metrics::Histogram* prefill_seconds;
  metrics::Histogram* first_byte_seconds;  // client request to first byte out
  metrics::Histogram* request_seconds;     // client request to last byte out

  std::string Render(const Router& router) const;
};

}  // namespace crescent::proxy
