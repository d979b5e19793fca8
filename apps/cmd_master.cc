// `crescent master`: the store's master (object index, allocation, leases,
// eviction, client liveness) over gRPC, with /metrics and, optionally, the
// transfer engine's HTTP metadata service. Flags keep the names users of
// the Mooncake master know (dashes or underscores).
#include <signal.h>

#include <memory>
#include <thread>

#include "apps/command.h"
#include "common/logging.h"
#include "store/master_server.h"

namespace crescent::apps {
namespace {

struct Flags {
  store::MasterServerOptions options;
  std::string config;
  int64_t client_ttl_s = 10;
  int fast_port = 0;
};

Status RunMaster(Flags flags, const CLI::App& cmd) {
  store::MasterServerOptions options = flags.options;
  if (!flags.config.empty()) {
    ASSIGN_OR_RETURN(options, store::LoadMasterConfig(flags.config, options));
  }
  // Flags given explicitly win over the file.
  auto given = [&](const char* name) { return cmd.count(name) > 0; };
  const auto& f = flags.options;
  if (given("--port")) options.port = f.port;
  if (given("--host")) options.host = f.host;
  if (given("--eviction-high-watermark-ratio")) {
    options.master.eviction_high_watermark_ratio = f.master.eviction_high_watermark_ratio;
  }
  if (given("--eviction-ratio")) options.master.eviction_ratio = f.master.eviction_ratio;
  if (given("--default-kv-lease-ttl")) {
    options.master.default_kv_lease_ttl_ms = f.master.default_kv_lease_ttl_ms;
  }
  if (given("--client-ttl") || flags.config.empty()) {
    options.master.client_ttl_ms = flags.client_ttl_s * 1000;
  }
  if (given("--put-timeout")) options.master.put_timeout_ms = f.master.put_timeout_ms;
  if (given("--enable-http-metadata-server")) {
    options.enable_http_metadata_server = f.enable_http_metadata_server;
  }
  if (given("--http-metadata-server-port")) {
    options.http_metadata_server_port = f.http_metadata_server_port;
  }
  if (given("--metrics-port")) options.metrics_port = f.metrics_port;
  if (given("--cluster-id")) options.cluster_id = f.cluster_id;
  if (given("--fast-port")) options.fast_port = flags.fast_port;
  if (options.fast_port.has_value() && *options.fast_port > 65535) {
    return InvalidArgumentError("--fast-port " + std::to_string(*options.fast_port) +
                                " is not a port; use 1-65535, 0 for any free port or -1 for off");
  }

  // Signals are taken by a watcher thread; block them before any server
  // thread starts so that they inherit the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  ASSIGN_OR_RETURN(auto server, store::MasterServer::Start(options));
  // Tests and scripts read the bound ports from this line.
  std::printf("crescent master listening on %s:%u metrics %u fast %u\n", options.host.c_str(),
              server->port(), server->metrics_port(), server->fast_port());
  std::fflush(stdout);
  std::thread watcher([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("master: signal {}, shutting down", sig);
    server->Shutdown();
  });
  server->Wait();
  // Wake the watcher if Shutdown came from elsewhere.
  pthread_kill(watcher.native_handle(), SIGTERM);
  watcher.join();
  return OkStatus();
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("master", "The KV store's master (gRPC), with /metrics");
  auto flags = std::make_shared<Flags>();
  auto& o = flags->options;
  cmd->add_option("--port,--rpc-port,--rpc_port", o.port, "gRPC port")->capture_default_str();
  cmd->add_option("--host,--rpc-address,--rpc_address", o.host, "Listen address")
      ->capture_default_str();
  cmd->add_option("--eviction-high-watermark-ratio,--eviction_high_watermark_ratio",
                  o.master.eviction_high_watermark_ratio,
                  "Evict when allocated/total exceeds this")
      ->capture_default_str();
  cmd->add_option("--eviction-ratio,--eviction_ratio", o.master.eviction_ratio,
                  "Share of all bytes each eviction frees")
      ->capture_default_str();
  cmd->add_option("--default-kv-lease-ttl,--default_kv_lease_ttl", o.master.default_kv_lease_ttl_ms,
                  "Read lease, ms")
      ->capture_default_str();
  cmd->add_option("--client-ttl,--client_ttl", flags->client_ttl_s,
                  "Seconds of silence after which a client loses its segments")
      ->capture_default_str();
  cmd->add_option("--put-timeout,--put_timeout", o.master.put_timeout_ms,
                  "An unfinished put is reclaimed after this many ms")
      ->capture_default_str();
  cmd->add_flag("--enable-http-metadata-server,--enable_http_metadata_server",
                o.enable_http_metadata_server, "Host the transfer engine's HTTP metadata service");
  cmd->add_option("--http-metadata-server-port,--http_metadata_server_port",
                  o.http_metadata_server_port, "Port of the HTTP metadata service")
      ->capture_default_str();
  cmd->add_option("--metrics-port,--metrics_port", o.metrics_port,
                  "HTTP port for /metrics, /health, /query_key, /segments")
      ->capture_default_str();
  cmd->add_option("--cluster-id,--cluster_id", o.cluster_id, "Cluster name (metadata key prefix)")
      ->capture_default_str();
  cmd->add_option("--fast-port,--fast_port", flags->fast_port,
                  "Port of the lean binary protocol for puts and gets (clients find it through "
                  "Health); default: --port + 1, or any free port when taken; 0: any free port; "
                  "-1: off");
  cmd->add_option("--config", flags->config, "JSON file with the same keys as these flags");
  cmd->callback([flags, cmd] { ExitWith(RunMaster(*flags, *cmd)); });
}

}  // namespace
CRESCENT_REGISTER_COMMAND(master, Setup);
}  // namespace crescent::apps
