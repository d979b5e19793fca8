// `crescent up`: a whole disaggregated cluster on this machine with one
// command (master + metadata service, prefill and decode instances, proxy),
// until Ctrl-C. See src/cluster/cluster.h and docs/cluster.md.
//
//   crescent up                       # a small random Qwen3 model, 1P1D, port 8000
//   crescent up --model DIR --prefill 2 --decode 2 --port 9000
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>

#include <fmt/format.h>

#include "apps/command.h"
#include "cluster/cluster.h"
#include "cluster/model_cache.h"

namespace crescent::apps {
namespace {

struct UpFlags {
  cluster::ClusterOptions cluster;
  std::string shape = "tiny";
  std::string cache_dir;
  bool no_kv_connector = false;
  int start_timeout_s = 180;
};

void PrintReady(const cluster::Cluster& c, const cluster::ClusterOptions& o, double seconds) {
  int instances = o.prefill + o.decode;
  int threads = o.threads > 0 ? o.threads : cluster::DefaultThreadsPerInstance(instances);
  std::string out = fmt::format(
      "crescent up: ready in {:.1f} s: model {}, {} prefill + {} decode on {} ({} thread{} "
      "each), KV through the store: {}\n",
      seconds, c.served_model_name(), o.prefill, o.decode, o.device, threads,
      threads == 1 ? "" : "s", o.kv_connector ? "yes" : "no (--no-kv-connector)");
  for (const auto& m : c.members()) {
    std::string where = m.role == "master" ? m.address + " (gRPC)" : "http://" + m.address;
    out += fmt::format("  {:<10} {:<28} pid {:<8} log {}\n", m.name, where, m.pid, m.log_path);
  }
  if (!c.mooncake_config_path().empty()) {
    out += fmt::format("  {:<10} {}\n", "config", c.mooncake_config_path());
  }
  out += fmt::format("\nOpenAI API at {}/v1 (GET {}/status shows the instances). Try:\n{}\n\n"
                     "Ctrl-C stops everything.\n",
                     c.base_url(), c.base_url(), cluster::ExampleCurl(c.base_url(),
                                                                        c.served_model_name()));
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);
}

Status RunUp(UpFlags f) {
  cluster::ClusterOptions o = f.cluster;
  o.kv_connector = !f.no_kv_connector;
  o.start_timeout = std::chrono::seconds(f.start_timeout_s);

  // SIGINT/SIGTERM/SIGHUP go to a watcher thread (blocked here before any
  // thread starts, so every thread inherits the mask).
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  std::atomic<bool> stop{false};
  std::atomic<int> got_signal{0};
  std::thread watcher([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    got_signal = sig;
    stop = true;
  });
  auto finish = [&](Status s) {
    if (!stop.exchange(true)) pthread_kill(watcher.native_handle(), SIGTERM);
    watcher.join();
    return s;
  };
  o.cancel = &stop;

  auto t0 = std::chrono::steady_clock::now();
  if (o.model.empty()) {
    std::string cache = f.cache_dir.empty() ? cluster::DefaultCacheDir() : f.cache_dir;
    auto model = cluster::EnsureModel(f.shape, cluster::SelfExe(), cache);
    if (!model.ok()) return finish(model.status());
    o.model = *model;
  }
  std::fprintf(stderr, "crescent up: starting %s%d prefill + %d decode instances of %s ...\n",
               o.kv_connector ? "the master, " : "", o.prefill, o.decode, o.model.c_str());
  auto started = cluster::Cluster::Start(o);
  if (!started.ok()) {
    if (started.status().code() == StatusCode::kCancelled) {
      std::fprintf(stderr, "crescent up: interrupted during start-up; everything stopped\n");
      return finish(OkStatus());
    }
    return finish(Status(started.status().code(),
                         "crescent up did not start: " + started.status().message()));
  }
  std::unique_ptr<cluster::Cluster> c = std::move(*started);
  PrintReady(*c, o, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  // Until a signal, or until the cluster cannot serve any more: a dead
  // instance is reported and left to the proxy's failover while a decode
  // instance remains.
  Status alive;
  while (!stop.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (const Status& s : c->NewlyExited()) {
      std::fprintf(stderr, "crescent up: %s\n", s.message().c_str());
    }
    if (!c->CanServe()) {
      alive = UnavailableError("the cluster cannot serve any more (see above)");
      break;
    }
  }
  if (got_signal.load() != 0) {
    std::fprintf(stderr, "crescent up: %s, stopping ...\n", strsignal(got_signal.load()));
  }
  c->Stop();
  if (!alive.ok()) {
    return finish(Status(alive.code(), alive.message() + "; everything else was stopped"));
  }
  std::fprintf(stderr, "crescent up: stopped\n");
  return finish(OkStatus());
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "up", "Start a whole cluster here: master, prefill and decode instances, proxy (Ctrl-C stops)");
  auto f = std::make_shared<UpFlags>();
  auto& o = f->cluster;
  cmd->add_option("--model", o.model,
                  "Model directory (default: a random-weight Qwen3 model of --shape, made once)");
  cmd->add_option("--shape", f->shape, "Shape of the default model: tiny | qwen3-0.6b")
      ->capture_default_str();
  cmd->add_option("--cache-dir", f->cache_dir,
                  "Where the default model is kept (default: $CRESCENT_CACHE_DIR, "
                  "$XDG_CACHE_HOME/crescent or ~/.cache/crescent)");
  cmd->add_option("--prefill", o.prefill, "Prefill instances (kv_producer)")->capture_default_str();
  cmd->add_option("--decode", o.decode, "Decode instances (kv_consumer)")->capture_default_str();
  cmd->add_option("--device", o.device, "cpu | cuda")->capture_default_str();
  cmd->add_option("--host", o.host, "Address every process listens on")->capture_default_str();
  cmd->add_option("--port", o.port, "Port of the proxy, the cluster's front door")
      ->capture_default_str();
  cmd->add_option("--threads", o.threads,
                  "CPU threads per instance (default: the cores split among the instances)");
  cmd->add_option("--kv-cache-memory-bytes", o.kv_cache_memory,
                  "KV cache per instance (default: sized from the model, 16 MiB - 1 GiB)");
  cmd->add_option("--max-model-len", o.max_model_len, "Context length of every instance")
      ->capture_default_str();
  cmd->add_option("--max-num-seqs", o.max_num_seqs, "Sequences per batch per instance")
      ->capture_default_str();
  cmd->add_option("--global-segment-size", o.global_segment_size,
                  "Memory each instance gives the KV store (mooncake.json; default: sized from "
                  "the model, 256 MiB - 2 GiB)");
  cmd->add_option("--local-buffer-size", o.local_buffer_size,
                  "Staging buffer per instance (mooncake.json; default: sized from the model, "
                  "64 - 512 MiB)");
  cmd->add_option("--scheduling", o.scheduling, "Proxy policy: round_robin | least_loaded | "
                                                "cache_aware")
      ->capture_default_str();
  cmd->add_flag("--no-kv-connector", f->no_kv_connector,
                "Instances without --kv-transfer-config and no master (decode instances "
                "prefill themselves)");
  cmd->add_option("--work-dir", o.work_dir,
                  "Directory for logs and mooncake.json (kept; default: a temp dir removed on "
                  "a clean stop)");
  cmd->add_flag("--keep-logs", o.keep_work_dir, "Keep the temp work dir after stopping");
  cmd->add_option("--start-timeout", f->start_timeout_s, "Seconds for every process to be healthy")
      ->capture_default_str();
  cmd->callback([f] { ExitWith(RunUp(*f)); });
}

CRESCENT_REGISTER_COMMAND(up, Setup);

}  // namespace
}  // namespace crescent::apps
