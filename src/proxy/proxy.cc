#include "proxy/proxy.h"

#include <fmt/format.h>

#include <random>

#include "common/config.h"
#include "common/logging.h"
#include "proxy/proxy_internal.h"

namespace crescent::proxy {

std::string Proxy::Core::NewRequestId() {
  return fmt::format("{}-{}", id_prefix, next_request.fetch_add(1, std::memory_order_relaxed));
}

// ----------------------------------------------------------------- Prober

void Prober::Start() { thread_ = std::thread([this] { Run(); }); }

void Prober::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Prober::Post(std::function<void()> task) {
  {
    std::lock_guard lock(mu_);
    tasks_.push_back(std::move(task));
  }
  cv_.notify_all();
}

void Prober::Run() {
  auto next_round = std::chrono::steady_clock::now();
  for (;;) {
    std::vector<std::function<void()>> tasks;
    {
      std::unique_lock lock(mu_);
      cv_.wait_until(lock, next_round, [&] { return stop_ || !tasks_.empty(); });
      if (stop_) return;
      tasks.swap(tasks_);
    }
    for (auto& t : tasks) t();
    if (std::chrono::steady_clock::now() >= next_round) {
      ExpireSlowPrefills(core_);
      ProbeRound();
      next_round = std::chrono::steady_clock::now() + core_.options.probe_interval;
    }
  }
}

void Prober::ProbeRound() {
  bool models_fresh = false;
  for (const auto& inst : core_.router.Instances()) {
    if (inst.draining) continue;
    auto& client = clients_[inst.address];
    if (!client) {
      auto hp = ParseHostPort(inst.address, "instance");
      if (!hp.ok()) continue;
      http::ClientOptions co;
      co.connect_timeout = core_.options.probe_timeout;
      co.timeout = core_.options.probe_timeout;
      co.max_idle_connections = 1;
      client = std::make_unique<http::Client>(hp->first, hp->second, co);
    }
    auto resp = client->Get("/health");
    Status result = !resp.ok()              ? resp.status()
                    : resp->status == 200 ? OkStatus()
                                          : UnavailableError(fmt::format(
                                                "GET /health answered HTTP {}", resp->status));
    if (core_.router.ReportProbe(inst.role, inst.address, result)) {
      spdlog::warn("proxy: {} instance {} is out of rotation: {}", RoleName(inst.role),
                   inst.address, result.message());
      AbandonInstance(core_, inst.role, inst.address,
                      fmt::format("{} failed its health probe: {}", inst.address, result.message()));
    } else if (result.ok() && !inst.healthy) {
      spdlog::info("proxy: {} instance {} is back in rotation", RoleName(inst.role), inst.address);
    }
    if (result.ok() && !models_fresh) {
      std::string body;
      auto ids = ProbeModels(*client, &body);
      if (ids.ok()) {
        models_fresh = true;
        std::lock_guard lock(core_.models_mu);
        core_.models_body = std::move(body);
        core_.model_ids = std::move(*ids);
      }
    }
  }
}

// ------------------------------------------------------------------ Proxy

StatusOr<std::unique_ptr<Proxy>> Proxy::Start(ProxyOptions options) {
  std::unique_ptr<Proxy> p(new Proxy());
  auto core = std::make_shared<Core>(std::move(options));
  const ProxyOptions& o = core->options;
  for (const auto& a : o.prefill) RETURN_IF_ERROR(core->router.Add(Role::kPrefill, a).WithContext("--prefill"));
  for (const auto& a : o.decode) RETURN_IF_ERROR(core->router.Add(Role::kDecode, a).WithContext("--decode"));
  // No "cmpl-": the instance adds it to the X-Request-Id (as vLLM does).
  core->id_prefix = fmt::format("{:08x}", static_cast<uint32_t>(std::random_device{}()));

  http::ClientOptions co;
  co.connect_timeout = o.connect_timeout;
  co.timeout = o.upstream_timeout;
  co.max_idle_connections = 4096;  // one per concurrent stream, reused across requests
  // Its own io thread only runs what is started without a ResponseWriter
  // (nothing today): relayed requests run on the server's threads.
  core->upstream = std::make_unique<http::StreamClient>(co, 1);

  http::ServerOptions so;
  so.host = o.host;
  so.port = o.port;
  so.io_threads = o.io_threads;
  so.server_name = "crescent-proxy";
  core->server = std::make_unique<http::Server>(so);
  std::weak_ptr<Core> weak = core;
  for (Endpoint e : {Endpoint::kCompletions, Endpoint::kChatCompletions}) {
    core->server->HandleAsync(http::Method::kPost, std::string(EndpointPath(e)),
                              [weak, e](http::Request req, std::shared_ptr<http::ResponseWriter> w) {
                                if (auto c = weak.lock()) HandleInference(c, e, std::move(req), std::move(w));
                              });
  }
  RegisterControlRoutes(core, *core->server);
  core->prober = std::make_unique<Prober>(*core);
  RETURN_IF_ERROR(core->server->Start());
  core->prober->Start();
  spdlog::info("proxy: listening on {}:{}, scheduling {}, {} prefill and {} decode instances, "
               "admin API {}",
               o.host, core->server->port(), core->router.policy_name(), o.prefill.size(),
               o.decode.size(), o.admin_api_key.empty() ? "off (ADMIN_API_KEY unset)" : "on");
  p->core_ = std::move(core);
  return p;
}

Proxy::~Proxy() { Stop(); }

void Proxy::Stop() {
  if (!core_) return;
  {
    std::unique_lock lock(core_->launch_mu);
    if (core_->stopping.exchange(true)) return;
  }
  core_->prober->Stop();
  // Upstream exchanges run on the server's io threads: cancel them first
  // (their callbacks end the exchanges there), then stop the server.
  core_->upstream.reset();
  core_->server->Stop();
}

uint16_t Proxy::port() const { return core_->server->port(); }
Router& Proxy::router() { return core_->router; }

}  // namespace crescent::proxy
