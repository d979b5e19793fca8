// crescent metadata put|get|ls|rm: talk to any metadata backend by hand
// (debugging, and the writer process of the expiry tests).
//
//   crescent metadata --metadata-server URL put KEY VALUE [--hold] [--ttl-ms N]
//   crescent metadata --metadata-server URL get KEY         (raw value on stdout)
//   crescent metadata --metadata-server URL ls [PREFIX]     (one key per line)
//   crescent metadata --metadata-server URL rm KEY
//   crescent metadata --metadata-server URL bench [--ops N] [--value-size B] [--runs R]
//                                       (put, then get ops/s, one thread)
//
// put without --hold writes an entry with no lease (it stays); with --hold
// the entry is bound to this process's lease, kept alive until the process
// dies, and expires within --ttl-ms after a kill -9.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>

#include "apps/command.h"
#include "common/config.h"
#include "transfer/metadata/metadata.h"

namespace crescent::apps {
namespace {

struct Options {
  std::string server;
  int64_t ttl_ms = 10000;
  int64_t timeout_ms = 3000;
  std::string key;
  std::string value;
  std::string value_file;
  std::string prefix;
  bool hold = false;
  bool values = false;
  int ops = 2000;
  int value_size = 256;
  int runs = 5;
};

StatusOr<std::unique_ptr<transfer::MetadataStore>> Open(const Options& o, bool leased) {
  ASSIGN_OR_RETURN(auto spec, ParseMetadataServer(o.server));
  transfer::MetadataOptions mo;
  mo.ttl = std::chrono::milliseconds(o.ttl_ms);
  mo.op_timeout = std::chrono::milliseconds(o.timeout_ms);
  mo.leased = leased;
  return transfer::OpenMetadataStore(spec, mo);
}

Status Put(const Options& o) {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  if (o.hold) pthread_sigmask(SIG_BLOCK, &stop, nullptr);  // before the refresher starts
  std::string value = o.value;
  if (!o.value_file.empty()) {
    ASSIGN_OR_RETURN(value, ReadFile(o.value_file));
  }
  ASSIGN_OR_RETURN(auto store, Open(o, o.hold));
  RETURN_IF_ERROR(store->Put(o.key, value));
  if (!o.hold) return OkStatus();
  std::printf("holding %s (ttl %lld ms); stop with Ctrl-C\n", o.key.c_str(),
              static_cast<long long>(o.ttl_ms));
  std::fflush(stdout);
  int sig = 0;
  sigwait(&stop, &sig);
  return OkStatus();
}

Status Get(const Options& o) {
  ASSIGN_OR_RETURN(auto store, Open(o, false));
  ASSIGN_OR_RETURN(auto value, store->Get(o.key));
  std::fwrite(value.data(), 1, value.size(), stdout);
  return OkStatus();
}

Status List(const Options& o) {
  ASSIGN_OR_RETURN(auto store, Open(o, false));
  ASSIGN_OR_RETURN(auto kvs, store->List(o.prefix));
  for (const auto& [k, v] : kvs) {
    if (o.values) std::printf("%s\t%s\n", k.c_str(), v.c_str());
    else std::printf("%s\n", k.c_str());
  }
  return OkStatus();
}

Status Remove(const Options& o) {
  ASSIGN_OR_RETURN(auto store, Open(o, false));
  return store->Delete(o.key);
}

// Serial puts then gets of distinct keys from one thread (one kept-open
// connection), `runs` times; prints each run and the medians.
Status Bench(const Options& o) {
  ASSIGN_OR_RETURN(auto store, Open(o, true));
  std::string value(o.value_size, 'v');
  std::vector<double> puts, gets;
  for (int run = 0; run < o.runs; ++run) {
    auto key = [&](int i) { return "crescent/bench/" + std::to_string(run) + "/" + std::to_string(i); };
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < o.ops; ++i) RETURN_IF_ERROR(store->Put(key(i), value));
    auto t1 = std::chrono::steady_clock::now();
    for (int i = 0; i < o.ops; ++i) RETURN_IF_ERROR(store->Get(key(i)).status());
    auto t2 = std::chrono::steady_clock::now();
    puts.push_back(o.ops / std::chrono::duration<double>(t1 - t0).count());
    gets.push_back(o.ops / std::chrono::duration<double>(t2 - t1).count());
    std::printf("run %d: put %.0f ops/s, get %.0f ops/s\n", run, puts.back(), gets.back());
    for (int i = 0; i < o.ops; ++i) RETURN_IF_ERROR(store->Delete(key(i)));
  }
  std::sort(puts.begin(), puts.end());
  std::sort(gets.begin(), gets.end());
  std::printf("%s: median put %.0f ops/s, get %.0f ops/s (%d ops of %d B, %d runs)\n",
              store->Describe().c_str(), puts[puts.size() / 2], gets[gets.size() / 2], o.ops,
              o.value_size, o.runs);
  return OkStatus();
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("metadata", "Put, get, list or remove metadata entries by hand");
  auto o = std::make_shared<Options>();
  cmd->add_option("--metadata-server", o->server,
                  "http://h:p/metadata, etcd://h:p[,h:p], h:p (etcd) or redis://h:p")
      ->required();
  cmd->add_option("--timeout-ms", o->timeout_ms, "per-operation timeout")->capture_default_str();
  cmd->require_subcommand(1);

  auto* put = cmd->add_subcommand("put", "Write KEY = VALUE");
  put->add_option("key", o->key)->required();
  put->add_option("value", o->value, "the value (or --value-file)");
  put->add_option("--value-file", o->value_file, "read the value (any bytes) from this file");
  put->add_flag("--hold", o->hold, "bind the entry to this process's lease and keep it alive until killed");
  put->add_option("--ttl-ms", o->ttl_ms, "lease ttl with --hold")->capture_default_str();
  put->callback([o] { ExitWith(Put(*o)); });

  auto* get = cmd->add_subcommand("get", "Print KEY's value (raw bytes)");
  get->add_option("key", o->key)->required();
  get->callback([o] { ExitWith(Get(*o)); });

  auto* ls = cmd->add_subcommand("ls", "List keys starting with PREFIX");
  ls->add_option("prefix", o->prefix);
  ls->add_flag("--values", o->values, "print KEY<TAB>VALUE");
  ls->callback([o] { ExitWith(List(*o)); });

  auto* rm = cmd->add_subcommand("rm", "Remove KEY");
  rm->add_option("key", o->key)->required();
  rm->callback([o] { ExitWith(Remove(*o)); });

  auto* bench = cmd->add_subcommand("bench", "Measure put and get ops/s from one thread");
  bench->add_option("--ops", o->ops, "operations per run and kind")->capture_default_str();
  bench->add_option("--value-size", o->value_size, "value bytes")->capture_default_str();
  bench->add_option("--runs", o->runs, "runs (medians are printed)")->capture_default_str();
  bench->callback([o] { ExitWith(Bench(*o)); });
}

}  // namespace
CRESCENT_REGISTER_COMMAND(metadata, Setup);
}  // namespace crescent::apps
