#include "proxy/proxy_metrics.h"

#include <fmt/format.h>

namespace crescent::proxy {

namespace {
// Seconds; finer than metrics::LatencyBuckets() at the low end, where the
// proxy's own overhead lives.
const std::vector<double> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                     0.1,    0.25,  0.5,    1,     2.5,  5,     10};
}  // namespace

ProxyMetrics::ProxyMetrics() {
  auto& req = registry.AddCounter("crescent_proxy_requests_total",
                                  "Client requests by endpoint and outcome.",
                                  {"endpoint", "outcome"});
  const char* endpoints[2] = {"/v1/completions", "/v1/chat/completions"};
  const char* outcomes[3] = {"ok", "client_error", "failed"};
  for (int e = 0; e < 2; ++e)
    for (int o = 0; o < 3; ++o) requests[e][o] = &req.Get({endpoints[e], outcomes[o]});
  in_flight = &registry.AddGauge("crescent_proxy_in_flight_requests", "Client requests being served.").Get();
  streams_broken = &registry
                        .AddCounter("crescent_proxy_streams_broken_total",
                                    "Streams ended with an error event after bytes were sent "
                                    "(decode instance failed).")
                        .Get();
  client_disconnects = &registry
                            .AddCounter("crescent_proxy_client_disconnects_total",
                                        "Clients that left before their response completed.")
                            .Get();
  auto& retry = registry.AddCounter("crescent_proxy_retries_total",
                                    "Requests retried on another instance.", {"role"});
  retries[0] = &retry.Get({"prefill"});
  retries[1] = &retry.Get({"decode"});
  prefill_skipped = &registry
                         .AddCounter("crescent_proxy_prefill_skipped_total",
                                     "Requests whose decode instance prefilled itself (no "
                                     "prefill instance succeeded).")
                         .Get();
  auto& fail = registry.AddCounter("crescent_proxy_upstream_failures_total",
                                   "Failed requests to instances.", {"role"});
  upstream_failures[0] = &fail.Get({"prefill"});
  upstream_failures[1] = &fail.Get({"decode"});
  prefill_seconds =
      &registry.AddHistogram("crescent_proxy_prefill_seconds", "Time of the prefill step.", kBounds).Get();
  first_byte_seconds = &registry
                            .AddHistogram("crescent_proxy_first_byte_seconds",
                                          "From the client's request to the first response byte "
                                          "sent.",
                                          kBounds)
                            .Get();
  request_seconds = &registry
                         .AddHistogram("crescent_proxy_request_seconds",
                                       "From the client's request to its end.", kBounds)
                         .Get();
}

std::string ProxyMetrics::Render(const Router& router) const {
  std::string o = registry.Render();
  auto help = [&](std::string_view name, std::string_view type, std::string_view text) {
    o += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, text, name, type);
  };
  auto instances = router.Instances();
  help("crescent_proxy_instance_healthy", "gauge", "1 when the instance is in rotation.");
  for (const auto& i : instances)
    o += fmt::format("crescent_proxy_instance_healthy{{role=\"{}\",instance=\"{}\"}} {}\n",
                     RoleName(i.role), i.address, (i.healthy && !i.draining) ? 1 : 0);
  help("crescent_proxy_instance_in_flight_requests", "gauge", "Requests in flight per instance.");
  for (const auto& i : instances)
    o += fmt::format("crescent_proxy_instance_in_flight_requests{{role=\"{}\",instance=\"{}\"}} {}\n",
                     RoleName(i.role), i.address, i.in_flight_requests);
  help("crescent_proxy_instance_in_flight_tokens", "gauge", "Tokens in flight per instance.");
  for (const auto& i : instances)
    o += fmt::format("crescent_proxy_instance_in_flight_tokens{{role=\"{}\",instance=\"{}\"}} {}\n",
                     RoleName(i.role), i.address, i.in_flight_tokens);
  help("crescent_proxy_instance_requests_total", "counter", "Requests sent per instance.");
  for (const auto& i : instances)
    o += fmt::format("crescent_proxy_instance_requests_total{{role=\"{}\",instance=\"{}\"}} {}\n",
                     RoleName(i.role), i.address, i.requests_total);
  return o;
}

}  // namespace crescent::proxy
