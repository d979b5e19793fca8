// Proxy: the XpYd front door in front of prefill and decode instances.
//
// For POST /v1/completions and /v1/chat/completions it sends a copy of the
// request with max_tokens=1 and stream=false to a prefill instance (which
// computes the prompt's KV and puts it into the store), then the original
// request to a decode instance, whose response streams through to the
// client as it arrives. The client sees what one vanilla instance returns.
//
// Failover:
//   - a prefill instance that fails (cannot be reached, 5xx, times out) is
//     replaced by another one, up to `prefill_attempts`; after that, or when
//     no prefill instance is healthy, the decode instance prefills itself;
//   - a decode instance that fails before the first response byte went out
//     is replaced by another, up to `decode_attempts`; the client sees
//     nothing of it;
//   - a decode instance that fails after bytes went out: the stream ends
//     with an OpenAI error event and "data: [DONE]", never hangs;
//   - an instance that fails its health probes leaves rotation (requests
//     waiting on it are moved or ended as above) and returns when it
//     answers again; one that refuses a connection leaves at once.
//   - a client that disconnects cancels its upstream requests.
// Errors the proxy itself returns are OpenAI error JSON: 400 for a body
// that is not JSON, 503 when no decode instance can take the request, 502
// when every decode attempt failed, 504 when they timed out.
//
// Other endpoints: GET /v1/models (the instances' model list, cached from
// probes), GET /health (200 while a decode instance is in rotation, else
// 503), GET /status, GET /metrics (Prometheus), and the admin API
// (POST /instances/add, POST /instances/remove; see docs/proxy.md) when
// `admin_api_key` is set.
//
// Thread safety: Start/Stop from one thread; the Router may be used from
// any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "proxy/policy.h"
#include "proxy/router.h"

namespace crescent::proxy {

struct ProxyOptions {
  std::string host = "0.0.0.0";
  uint16_t port = 8000;  // 0: an ephemeral port (see Proxy::port())
  std::vector<std::string> prefill;  // "host:port" each
  std::vector<std::string> decode;
  PolicyKind scheduling = PolicyKind::kRoundRobin;
  // Model name for /v1/models until an instance has answered a probe.
  std::string model_name;
  // The admin API's key; empty turns the admin API off.
  std::string admin_api_key;

  // Io threads. A request's connections to instances live on the thread of
  // its client connection, so a relayed chunk never changes threads.
  int io_threads = 1;

  // Health probes: GET /health on every instance each interval.
  std::chrono::milliseconds probe_interval{2000};
  std::chrono::milliseconds probe_timeout{2000};
  // Upstream requests: connect timeout, and the longest wait for a response
  // head or between two body bytes (a non-streaming response arrives whole
  // at the end of generation, so keep it long).
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds upstream_timeout{600000};
  // A prefill attempt still unanswered after this is abandoned (the next
  // instance, or the decode instance, takes over): catches an instance that
  // answers /health but hangs on requests. Checked each probe_interval.
  std::chrono::milliseconds prefill_timeout{60000};
  int prefill_attempts = 2;  // instances tried before the decode prefills itself
  int decode_attempts = 3;   // instances tried before the client gets an error

  // Cache-aware routing: prompt tokens per hashed block, and the tokenizer
  // (nullptr: blocks of 4 * block_tokens bytes of prompt text instead).
  size_t block_tokens = 16;
  std::function<std::vector<int32_t>(std::string_view)> tokenize;
  // Decode load estimate of a request that sets no max_tokens.
  int64_t assumed_max_tokens = 256;

  RouterOptions router;
  CacheAwareOptions cache;
};

class Proxy {
 public:
  // Listens and starts probing. INVALID_ARGUMENT for a bad instance
  // address; UNAVAILABLE when the port cannot be bound.
  static StatusOr<std::unique_ptr<Proxy>> Start(ProxyOptions options);
  ~Proxy();  // Stop()s
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // Stops listening, ends in-flight requests, stops probing.
  void Stop();

  uint16_t port() const;
  Router& router();

  struct Core;  // shared state, in proxy_internal.h

 private:
  Proxy() = default;
  std::shared_ptr<Core> core_;
};

}  // namespace crescent::proxy
