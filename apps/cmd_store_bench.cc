// `crescent store-bench`: throughput of the KV store.
//   --mode data    (default) put/get of each --sizes value at each --clients
//                  count through the store, beside redis-server SET/GET of the
//                  same sizes in the same run. The bench starts a master (with
//                  the HTTP metadata service) in process and a second
//                  `crescent store-bench --mode holder` process that
//                  contributes the memory, so every byte crosses processes:
//                  shared memory by default, --tcp forces tcp.
//   --mode master  metadata operations of the master alone (no bytes), in
//                  process (logic only) and over gRPC.
//   --mode holder  mount a segment and hold it until SIGTERM (the bench's
//                  second process; tests use it as a store member).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <thread>

#include "apps/command.h"
#include "common/logging.h"
#include "common/size.h"
#include "store/client.h"
#include "store/data_bench.h"
#include "store/master_bench.h"
#include "store/master_server.h"

namespace crescent::apps {
namespace {

struct Flags {
  std::string mode = "data";
  std::string master;
  std::string metadata;
  int threads = 2;
  uint64_t keys = 20000;
  int batch = 128;
  std::string sizes = "4096,262144,1048576";
  std::string clients = "1,8,32";
  int runs = 3;
  int warmup = 1;
  std::string segment_size = "1GB";
  std::string bytes_per_run = "256MB";
  bool tcp = false;
  bool no_redis = false;
  bool no_fast_port = false;
  bool no_reservations = false;
};

std::vector<uint64_t> ParseList(const std::string& text) {
  std::vector<uint64_t> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(ParseSize(item).value_or(0));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

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
  struct Target {
    const char* name;
    std::string address;
    bool fast;
  };
  for (const Target& target : {Target{"logic (in-process)", "", false},
                               Target{"fast port", address, true},
                               Target{"gRPC", address, false}}) {
    if (target.fast && f.no_fast_port) continue;
    o.master_address = target.address;
    o.use_fast_port = target.fast;
    ASSIGN_OR_RETURN(auto results, store::RunMasterBench(o));
    for (const auto& r : results) {
      std::printf("| %s | %s | %.0f | %.0f |\n", target.name, r.op.c_str(), r.ops_per_s,
                  r.rpcs_per_s);
    }
    std::fflush(stdout);
  }
  return OkStatus();
}

MooncakeConfig BenchConfig(const Flags& f, uint64_t segment, uint64_t local_buffer) {
  MooncakeConfig c;
  c.master_server_address = f.master;
  c.metadata_server = f.metadata;
  c.metadata = ParseMetadataServer(f.metadata).value_or(MetadataServerSpec{});
  c.global_segment_size = segment;
  c.local_buffer_size = local_buffer;
  return c;
}

Status RunHolderMode(const Flags& f) {
  // Runs until SIGTERM/SIGINT: blocked here so that every thread inherits
  // the mask and sigwait below takes them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ASSIGN_OR_RETURN(uint64_t segment, ParseSize(f.segment_size));
  store::ClientOptions o;
  o.config = BenchConfig(f, segment, 1 << 20);
  o.tcp_only = f.tcp;
  ASSIGN_OR_RETURN(auto client, store::Client::Create(o));
  std::printf("holder ready %s\n", client->segment_name().c_str());
  std::fflush(stdout);
  int sig = 0;
  sigwait(&signals, &sig);
  return OkStatus();
}

// A child process whose stdin we hold: it exits when we close it.
struct Child {
  pid_t pid = -1;
  int stdin_fd = -1;
  ~Child() {
    if (stdin_fd >= 0) close(stdin_fd);
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
  }
};

uint16_t FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

bool Accepts(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

StatusOr<std::unique_ptr<Child>> Spawn(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe(fds) != 0) return ErrnoToStatus(errno, "pipe");
  auto child = std::make_unique<Child>();
  child->pid = fork();
  if (child->pid < 0) return ErrnoToStatus(errno, "fork");
  if (child->pid == 0) {
    dup2(fds[0], 0);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(fds[0]);
  child->stdin_fd = fds[1];
  return child;
}

Status RunDataMode(Flags f) {
  store::DataBenchOptions o;
  o.sizes = ParseList(f.sizes);
  o.clients.clear();
  for (uint64_t c : ParseList(f.clients)) o.clients.push_back(static_cast<int>(c));
  o.runs = f.runs;
  o.warmup_runs = f.warmup;
  ASSIGN_OR_RETURN(o.bytes_per_run, ParseSize(f.bytes_per_run));
  // A master in this process, with a short read lease so that each run can
  // clear the pool after its reads.
  store::MasterServerOptions so;
  so.host = "127.0.0.1";
  so.port = 0;
  so.enable_metrics = false;
  so.enable_http_metadata_server = true;
  so.http_metadata_server_port = 0;
  so.master.default_kv_lease_ttl_ms = 200;
  o.settle_ms = 250;
  ASSIGN_OR_RETURN(auto master, store::MasterServer::Start(so));
  f.master = "127.0.0.1:" + std::to_string(master->port());
  f.metadata = master->metadata_url();

  std::vector<std::string> argv = {"/proc/self/exe", "store-bench", "--mode", "holder", "--master",
                                   f.master, "--metadata", f.metadata, "--segment-size",
                                   f.segment_size};
  if (f.tcp) argv.push_back("--tcp");
  ASSIGN_OR_RETURN(auto holder, Spawn(argv));
  // Wait until the holder's segment is mounted.
  for (int i = 0; i < 200 && master->core().Stats().segments == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (master->core().Stats().segments == 0) {
    return UnavailableError("store-bench: the holder process did not mount its segment");
  }
  store::ClientOptions co;
  co.config = BenchConfig(f, 0, 64 << 20);
  co.tcp_only = f.tcp;
  co.use_fast_port = !f.no_fast_port;
  co.use_reservations = !f.no_reservations && !f.no_fast_port;
  ASSIGN_OR_RETURN(auto client, store::Client::Create(co));
  std::unique_ptr<Child> redis;
  uint16_t redis_port = 0;
  if (!f.no_redis) {
    redis_port = FreeLoopbackPort();
    ASSIGN_OR_RETURN(redis, Spawn({"redis-server", "--port", std::to_string(redis_port), "--bind",
                                   "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel",
                                   "warning"}));
    // Wait until it accepts connections.
    for (int i = 0; i < 100 && !Accepts(redis_port); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ASSIGN_OR_RETURN(auto rows, store::RunDataBench(*client, redis_port, o));
  client.reset();
  holder.reset();
  redis.reset();
  std::printf("transport: %s; medians of %d runs after %d warm-up run(s), each of ours followed "
              "by one of Redis; ratio: median of those pairs\n",
              f.tcp ? "tcp" : "shared memory", o.runs, o.warmup_runs);
  std::printf("| op | value | clients | crescent ops/s | crescent GB/s | redis ops/s | redis GB/s | ratio |\n"
              "|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows) {
    const double gb = double(r.size) / 1e9;
    std::printf("| %s | %s | %d | %.0f | %.2f | %.0f | %.2f | %.2fx |\n", r.op.c_str(),
                FormatSize(r.size).c_str(), r.clients, r.crescent_ops, r.crescent_ops * gb,
                r.redis_ops, r.redis_ops * gb, r.ratio);
  }
  std::fflush(stdout);
  return OkStatus();
}

Status RunStoreBench(const Flags& f) {
  if (f.mode == "master") return RunMasterMode(f);
  if (f.mode == "holder") return RunHolderMode(f);
  if (f.mode == "data") return RunDataMode(f);
  return InvalidArgumentError("--mode '" + f.mode + "' is not one of: data, master, holder");
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("store-bench", "Throughput of the KV store beside Redis");
  auto flags = std::make_shared<Flags>();
  cmd->add_option("--mode", flags->mode, "data | master | holder")->capture_default_str();
  cmd->add_option("--master", flags->master, "host:port of a running master (master mode)");
  cmd->add_option("--metadata", flags->metadata, "metadata_server URL (holder mode)");
  cmd->add_option("--threads", flags->threads, "Concurrent clients (master mode)")->capture_default_str();
  cmd->add_option("--keys", flags->keys, "Keys per thread (master mode)")->capture_default_str();
  cmd->add_option("--batch", flags->batch, "Items per batch RPC (master mode)")->capture_default_str();
  cmd->add_option("--sizes", flags->sizes, "Value sizes (data mode)")->capture_default_str();
  cmd->add_option("--clients", flags->clients, "Concurrent clients (data mode)")->capture_default_str();
  cmd->add_option("--runs", flags->runs, "Runs per point; medians reported")->capture_default_str();
  cmd->add_option("--warmup", flags->warmup, "Unmeasured runs first, for both systems")
      ->capture_default_str();
  cmd->add_option("--segment-size", flags->segment_size, "Memory the holder contributes")
      ->capture_default_str();
  cmd->add_option("--bytes-per-run", flags->bytes_per_run, "Bytes each phase moves")
      ->capture_default_str();
  cmd->add_flag("--tcp", flags->tcp, "Force tcp between the processes (no shared memory)");
  cmd->add_flag("--no-redis", flags->no_redis, "Skip the Redis reference");
  cmd->add_flag("--no-fast-port", flags->no_fast_port,
                "Data mode: every master call over gRPC (as before the fast port)");
  cmd->add_flag("--no-reservations", flags->no_reservations,
                "Data mode: every put in two round trips (PutStart, PutEnd)");
  cmd->callback([flags] { ExitWith(RunStoreBench(*flags)); });
}

}  // namespace
CRESCENT_REGISTER_COMMAND(store_bench, Setup);
}  // namespace crescent::apps
