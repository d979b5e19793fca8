// crescent transfer-bench: the transfer engine's throughput and latency,
// with the roles of Mooncake's transfer_engine_bench.
//
//   crescent transfer-bench --mode target --metadata-server URL --segment-id seg
//   crescent transfer-bench --mode initiator --metadata-server URL --segment-id seg
//       --operation write --block-size 1MiB --batch-size 128 --threads 2 --duration 5
//   crescent transfer-bench --mode memcpy --block-size 1MiB --batch-size 128
//
// The initiator first writes random data into the target, reads it back and
// compares xxh64 checksums (printed), then runs the timed loop: each thread
// submits a batch of `batch-size` requests of `block-size` bytes, waits for
// it, repeats. GB/s are 10^9 bytes per second of payload. memcpy mode is the
// reference for the shared-memory path: one thread copying the same blocks.
#include <signal.h>
#include <sys/resource.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "apps/command.h"
#include "common/config.h"
#include "common/size.h"
#include "fmt/format.h"
#include "transfer/metadata/metadata.h"
#include "transfer/transfer_engine.h"

namespace crescent::apps {
namespace {

using Clock = std::chrono::steady_clock;
using transfer::OpCode;
using transfer::TransferEngine;
using transfer::TransferRequest;

struct Options {
  std::string mode = "initiator";
  std::string metadata_server = "http://127.0.0.1:8080/metadata";
  std::string segment_id = "transfer-bench-target";
  std::string local_name;
  std::string local_hostname = "127.0.0.1";
  uint16_t port = 0;
  std::string operation = "write";
  std::string block_size = "64KiB";
  std::string buffer_size = "1GiB";
  size_t batch_size = 128;
  int threads = 2;
  double duration = -1;  // default: 5 s, target: until a signal
  std::string protocol = "auto";
  int connections = 4;
  std::string slice_size = "1MiB";
  std::string socket_buffer = "4MiB";
  std::string cluster_id = "crescent";
};

// Memory that is already faulted in, so page faults do not pollute timings.
std::unique_ptr<uint8_t[]> Touched(uint64_t bytes) {
  std::unique_ptr<uint8_t[]> p(new uint8_t[bytes]);
  std::memset(p.get(), 0x5a, bytes);
  return p;
}

// CPU seconds (user + system) this process has used.
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct Percentiles {
  double p50_ms = 0, p99_ms = 0;
};
Percentiles Summarize(std::vector<double>& ms) {
  if (ms.empty()) return {};
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, size_t(q * ms.size()))]; };
  return {at(0.50), at(0.99)};
}

StatusOr<std::shared_ptr<transfer::MetadataStore>> OpenMetadata(const Options& o) {
  ASSIGN_OR_RETURN(auto spec, ParseMetadataServer(o.metadata_server));
  ASSIGN_OR_RETURN(auto store, transfer::OpenMetadataStore(spec));
  return std::shared_ptr<transfer::MetadataStore>(std::move(store));
}

StatusOr<transfer::TransferEngineOptions> EngineOptions(const Options& o, std::string name) {
  transfer::TransferEngineOptions e;
  e.segment_name = std::move(name);
  e.local_hostname = o.local_hostname;
  e.tcp_port = o.port;
  e.connections_per_peer = o.connections;
  e.cluster_id = o.cluster_id;
  ASSIGN_OR_RETURN(e.slice_size, ParseSize(o.slice_size));
  ASSIGN_OR_RETURN(uint64_t sockbuf, ParseSize(o.socket_buffer));
  e.socket_buffer_bytes = static_cast<int>(std::min<uint64_t>(sockbuf, 1 << 30));
  if (o.protocol == "tcp") e.policy = transfer::TransportPolicy::kTcpOnly;
  else if (o.protocol == "shm") e.policy = transfer::TransportPolicy::kShmOnly;
  else if (o.protocol == "auto") e.policy = transfer::TransportPolicy::kAuto;
  else if (o.protocol == "rdma")
    return UnimplementedError("--protocol rdma: this build of crescent has no RDMA transport; use tcp");
  else return InvalidArgumentError("--protocol must be tcp, shm or auto");
  return e;
}

Status RunTarget(const Options& o) {
  ASSIGN_OR_RETURN(uint64_t bytes, ParseSize(o.buffer_size));
  ASSIGN_OR_RETURN(auto meta, OpenMetadata(o));
  ASSIGN_OR_RETURN(auto opts, EngineOptions(o, o.segment_id));
  // Signals are taken by sigwait below, not by the engine's threads.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  ASSIGN_OR_RETURN(auto engine, TransferEngine::Create(opts, meta));
  ASSIGN_OR_RETURN(auto region, engine->AllocateSegmentMemory(bytes));
  auto self = engine->OpenSegment(o.segment_id);
  auto info = self.ok() ? engine->GetSegmentInfo(*self) : StatusOr<transfer::SegmentInfo>(self.status());
  fmt::print("target: segment '{}' serves {} of shared memory (offset {}) in {}; tcp {}:{}\n",
             o.segment_id, FormatSize(bytes), region.segment_offset, meta->Describe(),
             o.local_hostname, info.ok() ? info->tcp_port : 0);
  std::fflush(stdout);
  if (o.duration > 0) {
    timespec ts{static_cast<time_t>(o.duration), 0};
    sigtimedwait(&sigs, nullptr, &ts);
  } else {
    int sig = 0;
    sigwait(&sigs, &sig);
  }
  fmt::print("target: stopping\n");
  return OkStatus();
}

Status RunInitiator(const Options& o) {
  ASSIGN_OR_RETURN(uint64_t block, ParseSize(o.block_size));
  if (block == 0 || o.batch_size == 0 || o.threads < 1)
    return InvalidArgumentError("--block-size, --batch-size and --threads must be > 0");
  OpCode op;
  if (o.operation == "read") op = OpCode::kRead;
  else if (o.operation == "write") op = OpCode::kWrite;
  else return InvalidArgumentError("--operation must be read or write");
  ASSIGN_OR_RETURN(auto meta, OpenMetadata(o));
  std::string name = o.local_name.empty() ? fmt::format("transfer-bench-initiator-{}", getpid())
                                          : o.local_name;
  ASSIGN_OR_RETURN(auto opts, EngineOptions(o, name));
  ASSIGN_OR_RETURN(auto engine, TransferEngine::Create(opts, meta));

  // The target may still be starting: wait for its segment a little.
  StatusOr<transfer::SegmentHandle> seg = engine->OpenSegment(o.segment_id);
  for (int i = 0; i < 100 && seg.status().code() == StatusCode::kNotFound; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    seg = engine->OpenSegment(o.segment_id);
  }
  RETURN_IF_ERROR(seg.status());
  ASSIGN_OR_RETURN(auto info, engine->GetSegmentInfo(*seg));
  // It publishes the segment first and its memory a moment later.
  for (int i = 0; i < 100 && info.regions.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    RETURN_IF_ERROR(engine->RefreshSegment(*seg));
    ASSIGN_OR_RETURN(info, engine->GetSegmentInfo(*seg));
  }
  if (info.regions.empty())
    return FailedPreconditionError(fmt::format("segment '{}' has no registered memory", o.segment_id));
  const auto& remote = info.regions.front();
  uint64_t per_thread = block * o.batch_size;
  uint64_t total = per_thread * o.threads;
  if (total > remote.length)
    return InvalidArgumentError(fmt::format(
        "threads x batch-size x block-size = {} does not fit the target's {} (its --buffer-size)",
        FormatSize(total), FormatSize(remote.length)));
  auto local = Touched(2 * total);
  RETURN_IF_ERROR(engine->RegisterMemory(local.get(), 2 * total).status());
  std::string path = info.shared_memory && remote.shareable && o.protocol != "tcp" ? "shm" : "tcp";

  // Correctness first: random bytes out, back in, checksums compared.
  {
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (uint64_t i = 0; i + 8 <= total; i += 8) {
      x ^= x << 13; x ^= x >> 7; x ^= x << 17;
      std::memcpy(local.get() + i, &x, 8);
    }
    std::vector<TransferRequest> reqs;
    for (uint64_t off = 0; off < total; off += block)
      reqs.push_back({OpCode::kWrite, local.get() + off, *seg, remote.segment_offset + off,
                      std::min(block, total - off)});
    RETURN_IF_ERROR(engine->Transfer(reqs).WithContext("verification write"));
    for (auto& r : reqs) {
      r.opcode = OpCode::kRead;
      r.local = static_cast<uint8_t*>(r.local) + total;
    }
    RETURN_IF_ERROR(engine->Transfer(reqs).WithContext("verification read"));
    uint64_t sent = XXH64(local.get(), total, 0), back = XXH64(local.get() + total, total, 0);
    fmt::print("verify: wrote {} to '{}' over {} and read it back: xxh64 {:016x} / {:016x} {}\n",
               FormatSize(total), o.segment_id, path, sent, back, sent == back ? "match" : "MISMATCH");
    if (sent != back) return DataLossError("verification failed: data read back differs");
  }

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bytes{0};
  std::vector<std::vector<double>> lat(o.threads);
  std::vector<Status> errors(o.threads);
  auto worker = [&](int t) {
    std::vector<TransferRequest> reqs;
    for (size_t i = 0; i < o.batch_size; ++i) {
      uint64_t off = t * per_thread + i * block;
      reqs.push_back({op, local.get() + off, *seg, remote.segment_offset + off, block});
    }
    while (!stop.load(std::memory_order_relaxed)) {
      auto start = Clock::now();
      Status s = engine->Transfer(reqs);
      if (!s.ok()) {
        errors[t] = s;
        stop = true;
        return;
      }
      lat[t].push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
      bytes += per_thread;
    }
  };
  double cpu_start = CpuSeconds();
  auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < o.threads; ++t) threads.emplace_back(worker, t);
  std::this_thread::sleep_for(std::chrono::duration<double>(o.duration));
  stop = true;
  for (auto& th : threads) th.join();
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  double cpu = CpuSeconds() - cpu_start;
  for (auto& e : errors) RETURN_IF_ERROR(e);
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  Percentiles p = Summarize(all);
  double gbps = bytes.load() / secs / 1e9;
  fmt::print("{} {} blocks over {}: batch {} x {} threads, {:.1f} s: {:.2f} GB/s, batch latency "
             "p50 {:.2f} ms p99 {:.2f} ms ({} batches); initiator cpu {:.2f} s/GB\n",
             o.operation, o.block_size, path, o.batch_size, o.threads, secs, gbps, p.p50_ms,
             p.p99_ms, all.size(), cpu / (bytes.load() / 1e9));
  fmt::print("RESULT mode=initiator op={} block={} path={} gbps={:.3f} p50_ms={:.3f} p99_ms={:.3f} "
             "cpu_s_per_gb={:.3f}\n",
             o.operation, block, path, gbps, p.p50_ms, p.p99_ms, cpu / (bytes.load() / 1e9));
  return OkStatus();
}

// One thread copying the same blocks between two buffers: the reference
// the shared-memory path is measured against.
Status RunMemcpy(const Options& o) {
  ASSIGN_OR_RETURN(uint64_t block, ParseSize(o.block_size));
  uint64_t total = block * o.batch_size;
  auto a = Touched(total), b = Touched(total);
  uint64_t bytes = 0;
  auto start = Clock::now();
  auto end = start + std::chrono::duration<double>(o.duration);
  while (Clock::now() < end) {
    for (uint64_t off = 0; off < total; off += block) std::memcpy(b.get() + off, a.get() + off, block);
    bytes += total;
    std::swap(a, b);
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  double gbps = bytes / secs / 1e9;
  fmt::print("memcpy {} blocks, 1 thread, working set 2 x {}: {:.2f} GB/s copied\n", o.block_size,
             FormatSize(total), gbps);
  fmt::print("RESULT mode=memcpy block={} gbps={:.3f}\n", block, gbps);
  return OkStatus();
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "transfer-bench", "Transfer engine benchmark (target/initiator roles like Mooncake's "
                        "transfer_engine_bench; memcpy reference)");
  auto o = std::make_shared<Options>();
  cmd->add_option("--mode", o->mode, "target | initiator | memcpy")
      ->check(CLI::IsMember({"target", "initiator", "memcpy"}));
  cmd->add_option("--metadata-server", o->metadata_server,
                  "http://h:p/metadata | etcd://h:p | redis://h:p");
  cmd->add_option("--segment-id", o->segment_id, "the target's segment name");
  cmd->add_option("--local-server-name", o->local_name, "initiator's own segment name");
  cmd->add_option("--local-hostname", o->local_hostname, "address peers use to reach us");
  cmd->add_option("--port", o->port, "tcp port of this engine (0 = any)");
  cmd->add_option("--operation", o->operation, "read | write");
  cmd->add_option("--block-size", o->block_size, "bytes per request (64KiB, 1MiB, ...)");
  cmd->add_option("--buffer-size", o->buffer_size, "target: segment memory to serve");
  cmd->add_option("--batch-size", o->batch_size, "requests per batch");
  cmd->add_option("--threads", o->threads, "initiator threads");
  cmd->add_option("--duration", o->duration,
                  "seconds to run (default 5; target: until SIGINT/SIGTERM)");
  cmd->add_option("--protocol", o->protocol, "tcp | shm | auto (shm when on one host)");
  cmd->add_option("--connections", o->connections, "pooled tcp connections per peer");
  cmd->add_option("--slice-size", o->slice_size, "tcp slice size");
  cmd->add_option("--socket-buffer", o->socket_buffer,
                  "SO_SNDBUF/SO_RCVBUF of tcp sockets (0 = kernel autotuning)");
  cmd->add_option("--cluster-id", o->cluster_id, "metadata key prefix");
  cmd->callback([o] {
    if (o->duration < 0) o->duration = o->mode == "target" ? 0 : 5;
    if (o->mode == "target") {
      ExitWith(RunTarget(*o));
    } else if (o->mode == "memcpy") {
      ExitWith(RunMemcpy(*o));
    } else {
      ExitWith(RunInitiator(*o));
    }
  });
}

}  // namespace
}  // namespace crescent::apps

CRESCENT_REGISTER_COMMAND(transfer_bench, crescent::apps::Setup);
