// `crescent store-bench`: throughput of the KV store.
//   --mode master  metadata operations of the master alone (no bytes), in
//                  process (logic only) and over gRPC (--master, or a
//                  master started in this process when empty).
#include <cstdio>
#include <memory>

#include "apps/command.h"
#include "store/master_bench.h"
#include "store/master_server.h"

namespace crescent::apps {
namespace {

struct Flags {
  std::string mode = "master";
  std::string master;
  int threads = 2;
  uint64_t keys = 20000;
  int batch = 128;
};

Status RunMasterMode(const Flags& f) {
  store::MasterBenchOptions o;
  o.threads = f.threads;
  o.keys_per_thread = f.keys;
  o.batch = f.batch;
  std::unique_ptr<store::MasterServer> server;
  std::string address = f.master;
  if (address.empty()) {
    store::MasterServerOptions so;
    so.host = "127.0.0.1";
    so.port = 0;
    so.enable_metrics = false;
    ASSIGN_OR_RETURN(server, store::MasterServer::Start(so));
    address = "127.0.0.1:" + std::to_string(server->port());
  }
  std::printf("| target | op | objects/s | calls/s |\n|---|---|---|---|\n");
  for (const std::string& target : {std::string(), address}) {
    o.master_address = target;
    ASSIGN_OR_RETURN(auto results, store::RunMasterBench(o));
    for (const auto& r : results) {
      std::printf("| %s | %s | %.0f | %.0f |\n",
                  target.empty() ? "logic (in-process)" : ("gRPC " + target).c_str(),
                  r.op.c_str(), r.ops_per_s, r.rpcs_per_s);
    }
    std::fflush(stdout);
  }
  return OkStatus();
}

Status RunStoreBench(const Flags& f) {
  if (f.mode == "master") return RunMasterMode(f);
  return InvalidArgumentError("--mode '" + f.mode + "' is not one of: master");
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("store-bench", "Throughput of the KV store (and its master)");
  auto flags = std::make_shared<Flags>();
  cmd->add_option("--mode", flags->mode, "master")->capture_default_str();
  cmd->add_option("--master", flags->master, "host:port of a running master (master mode)");
  cmd->add_option("--threads", flags->threads, "Concurrent clients")->capture_default_str();
  cmd->add_option("--keys", flags->keys, "Keys per thread (master mode)")->capture_default_str();
  cmd->add_option("--batch", flags->batch, "Items per batch RPC")->capture_default_str();
  cmd->callback([flags] { ExitWith(RunStoreBench(*flags)); });
}

}  // namespace
CRESCENT_REGISTER_COMMAND(store_bench, Setup);
}  // namespace crescent::apps
