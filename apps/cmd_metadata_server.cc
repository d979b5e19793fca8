// crescent metadata-server: the embedded HTTP metadata service on its own,
// compatible with Mooncake's HTTP metadata server (GET/PUT/DELETE
// /metadata?key=K), plus leases (docs/metadata.md).
#include <signal.h>

#include <cstdio>
#include <memory>

#include "apps/command.h"
#include "common/http.h"
#include "transfer/metadata/metadata_service.h"

namespace crescent::apps {
namespace {

struct Options {
  std::string host = "0.0.0.0";
  uint16_t port = 8080;
  std::string path = "/metadata";
  int io_threads = 1;
};

Status Run(const Options& o) {
  // Block the stop signals before any thread starts; sigwait() takes them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  http::ServerOptions so;
  so.host = o.host;
  so.port = o.port;
  so.io_threads = o.io_threads;
  http::Server server(so);
  transfer::MetadataServiceOptions mo;
  mo.path = o.path;
  auto service = transfer::MetadataService::Create(mo);
  service->AddRoutes(server);
  server.Handle(http::Method::kGet, "/health", [](const http::Request&) {
    return http::Response::Text(200, "ok\n");
  });
  RETURN_IF_ERROR(server.Start());
  std::printf("metadata server listening on http://%s:%u%s\n", o.host.c_str(), server.port(),
              o.path.c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop, &sig);
  server.Stop();
  return OkStatus();
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "metadata-server", "Run the HTTP metadata service (metadata_server \"http://host:port/metadata\")");
  auto o = std::make_shared<Options>();
  cmd->add_option("--host", o->host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "port to listen on (0: any free port)")->capture_default_str();
  cmd->add_option("--path", o->path, "URL path of the service")->capture_default_str();
  cmd->add_option("--io-threads", o->io_threads, "HTTP io threads")->capture_default_str()->check(CLI::Range(1, 64));
  cmd->callback([o] { ExitWith(Run(*o)); });
}

}  // namespace
CRESCENT_REGISTER_COMMAND(metadata_server, Setup);
}  // namespace crescent::apps
