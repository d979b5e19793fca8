#include "proxy/proxy_metrics.h"

#include <fmt/format.h>

namespace crescent::proxy {

void LatencyHistogram::Observe(double seconds) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void LatencyHistogram::Render(std::string& out, std::string_view name,
                              std::string_view labels) const {
  std::string sep = labels.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    std::string le = i < kBounds.size() ? fmt::format("{}", kBounds[i]) : "+Inf";
    out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep, le, cumulative);
  }
  std::string braces = labels.empty() ? "" : fmt::format("{{{}}}", labels);
  out += fmt::format("{}_sum{} {}\n", name, braces, sum_us_.load() / 1e6);
  out += fmt::format("{}_count{} {}\n", name, braces, count_.load());
}

std::string ProxyMetrics::Render(const Router& router) const {
  std::string o;
  o.reserve(8192);
  auto help = [&](std::string_view name, std::string_view type, std::string_view text) {
    o += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, text, name, type);
  };
  const char* endpoints[2] = {"/v1/completions", "/v1/chat/completions"};
  help("crescent_proxy_requests_total", "counter", "Client requests by endpoint and outcome.");
  for (int e = 0; e < 2; ++e) {
    o += fmt::format("crescent_proxy_requests_total{{endpoint=\"{}\",outcome=\"ok\"}} {}\n",
                     endpoints[e], requests_ok[e].load());
    o += fmt::format(
        "crescent_proxy_requests_total{{endpoint=\"{}\",outcome=\"client_error\"}} {}\n",
        endpoints[e], requests_client_error[e].load());
    o += fmt::format("crescent_proxy_requests_total{{endpoint=\"{}\",outcome=\"failed\"}} {}\n",
                     endpoints[e], requests_failed[e].load());
  }
  help("crescent_proxy_in_flight_requests", "gauge", "Client requests being served.");
  o += fmt::format("crescent_proxy_in_flight_requests {}\n", in_flight.load());
  help("crescent_proxy_streams_broken_total", "counter",
       "Streams ended with an error event after bytes were sent (decode instance failed).");
  o += fmt::format("crescent_proxy_streams_broken_total {}\n", streams_broken.load());
  help("crescent_proxy_client_disconnects_total", "counter",
       "Clients that left before their response completed.");
  o += fmt::format("crescent_proxy_client_disconnects_total {}\n", client_disconnects.load());
  help("crescent_proxy_retries_total", "counter", "Requests retried on another instance.");
  o += fmt::format("crescent_proxy_retries_total{{role=\"prefill\"}} {}\n", prefill_retries.load());
  o += fmt::format("crescent_proxy_retries_total{{role=\"decode\"}} {}\n", decode_retries.load());
  help("crescent_proxy_prefill_skipped_total", "counter",
       "Requests whose decode instance prefilled itself (no prefill instance succeeded).");
  o += fmt::format("crescent_proxy_prefill_skipped_total {}\n", prefill_skipped.load());
  help("crescent_proxy_upstream_failures_total", "counter", "Failed requests to instances.");
  o += fmt::format("crescent_proxy_upstream_failures_total{{role=\"prefill\"}} {}\n",
                   upstream_failures[0].load());
  o += fmt::format("crescent_proxy_upstream_failures_total{{role=\"decode\"}} {}\n",
                   upstream_failures[1].load());
  help("crescent_proxy_prefill_seconds", "histogram", "Time of the prefill step.");
  prefill_seconds.Render(o, "crescent_proxy_prefill_seconds", "");
  help("crescent_proxy_first_byte_seconds", "histogram",
       "From the client's request to the first response byte sent.");
  first_byte_seconds.Render(o, "crescent_proxy_first_byte_seconds", "");
  help("crescent_proxy_request_seconds", "histogram", "From the client's request to its end.");
  request_seconds.Render(o, "crescent_proxy_request_seconds", "");

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
