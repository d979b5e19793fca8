// Internals shared by the proxy's .cc files (not a public interface).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/http.h"
#include "proxy/openai_request.h"
#include "proxy/proxy.h"
#include "proxy/proxy_metrics.h"
#include "proxy/router.h"

namespace crescent::proxy {

class Exchange;  // one client request in flight (relay.cc)

// Periodic health probes plus a queue of blocking tasks (admin validation)
// on one thread, so that nothing blocks an io thread.
class Prober {
 public:
  explicit Prober(Proxy::Core& core) : core_(core) {}
  ~Prober() { Stop(); }
  void Start();
  void Stop();
  // Runs `task` on the prober thread, before the next probe round.
  void Post(std::function<void()> task);

 private:
  void Run();
  void ProbeRound();

  Proxy::Core& core_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;                             // guarded by mu_
  std::vector<std::function<void()>> tasks_;      // guarded by mu_
  std::unordered_map<std::string, std::unique_ptr<http::Client>> clients_;  // prober thread only
};

struct Proxy::Core {
  explicit Core(ProxyOptions o)
      : options(std::move(o)), router(options.scheduling, options.router, options.cache) {}

  // Constant after Start().
  const ProxyOptions options;
  std::string id_prefix;  // random per process, for request ids
  std::unique_ptr<http::StreamClient> upstream;
  std::unique_ptr<http::Server> server;
  std::unique_ptr<Prober> prober;

  Router router;
  ProxyMetrics metrics;
  std::atomic<uint64_t> next_request{0};
  std::atomic<bool> stopping{false};
  // Held shared while starting an upstream request, exclusively by Stop()
  // to set `stopping` before the StreamClient goes away.
  std::shared_mutex launch_mu;

  // Exchanges in flight, to move them off an instance that failed probes.
  std::mutex exchanges_mu;
  std::unordered_map<Exchange*, std::weak_ptr<Exchange>> exchanges;  // guarded

  // /v1/models as the instances answer it; model ids they serve.
  std::mutex models_mu;
  std::string models_body;              // guarded; "" until a probe got one
  std::vector<std::string> model_ids;   // guarded

  std::string NewRequestId();
};

// POST /v1/completions and /v1/chat/completions (relay.cc).
void HandleInference(std::shared_ptr<Proxy::Core> core, Endpoint endpoint, http::Request request,
                     std::shared_ptr<http::ResponseWriter> writer);
// Ends the upstream requests on `address` that have not sent a byte to
// their client yet (they retry elsewhere) or ends their stream (relay.cc).
void AbandonInstance(Proxy::Core& core, Role role, const std::string& address,
                     const std::string& reason);

// Abandons prefill attempts older than options.prefill_timeout (relay.cc).
void ExpireSlowPrefills(Proxy::Core& core);

// Admin API, /status, /health, /v1/models, /metrics (admin.cc).
void RegisterControlRoutes(const std::shared_ptr<Proxy::Core>& core, http::Server& server);
// Models an instance serves, from GET /v1/models (blocking; prober thread).
StatusOr<std::vector<std::string>> ProbeModels(http::Client& client, std::string* body);

http::Response JsonError(int status, std::string_view message);

}  // namespace crescent::proxy
