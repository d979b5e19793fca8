// crescent proxy: the XpYd front door (see src/proxy/proxy.h, docs/proxy.md).
//
//   crescent proxy --model DIR --prefill localhost:8100 localhost:8101
//       --decode localhost:8200 localhost:8201 --port 8000 [--scheduling round_robin]
//
// ADMIN_API_KEY in the environment turns on the admin API.
#include <signal.h>
#include <sys/stat.h>

#include <cstdlib>
#include <memory>

#include "apps/command.h"
#include "common/logging.h"
#include "model/tokenizer/tokenizer.h"
#include "proxy/proxy.h"

namespace crescent::apps {
namespace {

struct ProxyFlags {
  std::string model;
  std::vector<std::string> prefill;
  std::vector<std::string> decode;
  std::string host = "0.0.0.0";
  uint16_t port = 8000;
  std::string scheduling = "round_robin";
  int io_threads = 1;
  int probe_interval_ms = 2000;
  int probe_timeout_ms = 2000;
  int upstream_timeout_s = 600;
  int prefill_attempts = 2;
  int decode_attempts = 3;
  int prefill_timeout_s = 60;
};

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

Status RunProxy(const ProxyFlags& f) {
  proxy::ProxyOptions o;
  ASSIGN_OR_RETURN(o.scheduling, proxy::ParsePolicyKind(f.scheduling));
  o.host = f.host;
  o.port = f.port;
  o.prefill = f.prefill;
  o.decode = f.decode;
  o.model_name = f.model;
  o.io_threads = f.io_threads;
  o.probe_interval = std::chrono::milliseconds(f.probe_interval_ms);
  o.probe_timeout = std::chrono::milliseconds(f.probe_timeout_ms);
  o.upstream_timeout = std::chrono::seconds(f.upstream_timeout_s);
  o.prefill_attempts = f.prefill_attempts;
  o.prefill_timeout = std::chrono::seconds(f.prefill_timeout_s);
  o.decode_attempts = f.decode_attempts;
  if (const char* key = std::getenv("ADMIN_API_KEY")) o.admin_api_key = key;

  // Only cache_aware routing reads prompts as tokens.
  if (o.scheduling == proxy::PolicyKind::kCacheAware) {
    if (!f.model.empty() && FileExists(f.model + "/tokenizer.json")) {
      ASSIGN_OR_RETURN(auto tok, Tokenizer::Load(f.model));
      std::shared_ptr<Tokenizer> shared(std::move(tok));
      o.tokenize = [shared](std::string_view text) { return shared->Encode(text); };
      spdlog::info("proxy: cache-aware routing hashes tokens of {}/tokenizer.json", f.model);
    } else {
      spdlog::info("proxy: no tokenizer.json under --model '{}'; cache-aware routing hashes "
                   "prompt bytes",
                   f.model);
    }
  }

  // Block the signals before any thread starts so that sigwait gets them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ASSIGN_OR_RETURN(auto proxy, proxy::Proxy::Start(std::move(o)));
  std::printf("crescent proxy listening on %s:%u\n", f.host.c_str(), proxy->port());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  spdlog::info("proxy: signal {}, stopping", sig);
  proxy->Stop();
  return OkStatus();
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "proxy", "XpYd front door: prefill then decode per request, routing, admin API, failover");
  auto f = std::make_shared<ProxyFlags>();
  cmd->add_option("--model", f->model,
                  "Model directory (its tokenizer.json feeds cache_aware routing) or model name");
  cmd->add_option("--prefill", f->prefill, "Prefill instances, host:port ...");
  cmd->add_option("--decode", f->decode, "Decode instances, host:port ...");
  cmd->add_option("--host", f->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", f->port, "Port to listen on")->capture_default_str();
  cmd->add_option("--scheduling", f->scheduling, "round_robin | least_loaded | cache_aware")
      ->capture_default_str();
  cmd->add_option("--io-threads", f->io_threads,
                  "Io threads (a request's instance connections run on its client connection's thread)")
      ->capture_default_str();
  cmd->add_option("--probe-interval-ms", f->probe_interval_ms, "Health probe period")
      ->capture_default_str();
  cmd->add_option("--probe-timeout-ms", f->probe_timeout_ms, "Health probe timeout")
      ->capture_default_str();
  cmd->add_option("--upstream-timeout-s", f->upstream_timeout_s,
                  "Longest wait for an instance's response head or next bytes")
      ->capture_default_str();
  cmd->add_option("--prefill-attempts", f->prefill_attempts,
                  "Prefill instances tried before the decode instance prefills itself")
      ->capture_default_str();
  cmd->add_option("--prefill-timeout-s", f->prefill_timeout_s,
                  "A prefill unanswered this long goes to the next instance (or the decode prefills)")
      ->capture_default_str();
  cmd->add_option("--decode-attempts", f->decode_attempts,
                  "Decode instances tried before the client gets an error")
      ->capture_default_str();
  cmd->callback([f] { ExitWith(RunProxy(*f)); });
}

}  // namespace

CRESCENT_REGISTER_COMMAND(proxy, Setup);

}  // namespace crescent::apps
