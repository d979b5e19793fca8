// One machine's Crescent cluster as child processes: what `crescent up`
// and `crescent bench --compare` start.
//
//   crescent master --enable-http-metadata-server   (store master + metadata)
//   N x crescent serve --kv-transfer-config kv_producer   (prefill)
//   M x crescent serve --kv-transfer-config kv_consumer   (decode)
//   crescent proxy --prefill ... --decode ...        (the front door)
//
// Every process listens on 127.0.0.1; the proxy on options.port, the others
// on free ports. The instances share a mooncake.json written into the work
// directory (protocol tcp, metadata through the master's HTTP service).
// Start() returns once every process answers its health check, or fails
// naming the process that did not come up, with the tail of its log.
//
// The colocated layout (options.colocated) is one plain `crescent serve`
// without master, proxy or connector: the reference a disaggregated cluster
// is compared against.
//
// Thread safety: Start() and Stop() from the thread that lives as long as
// the cluster (children die with the thread that forked them, see
// child_process.h); the const accessors from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace crescent::cluster {

struct ClusterOptions {
  std::string crescent_bin;       // the binary to run; "" = this process's own
  std::string model;              // model directory (required)
  std::string served_model_name;  // "" = the model directory's base name
  int prefill = 1;                // prefill instances (kv_producer)
  int decode = 1;                 // decode instances (kv_consumer)
  bool colocated = false;         // one plain instance instead (see above)
  // false: instances without --kv-transfer-config (and no master): the
  // proxy's two-step flow with each decode instance prefilling itself.
  bool kv_connector = true;
  std::string device = "cpu";       // cpu | cuda
  std::string host = "127.0.0.1";   // where every process listens
  uint16_t port = 8000;             // the proxy (or colocated instance); 0 = free
  // CPU compute threads per instance; 0 = the machine's cores split evenly
  // among the instances (at least 1 each).
  int threads = 0;
  // Per instance; "" = sized from the model's KV bytes per token (see
  // AutoMemorySizes).
  std::string kv_cache_memory;      // --kv-cache-memory-bytes
  int max_model_len = 4096;
  int max_num_seqs = 64;
  std::string global_segment_size;  // each instance's share of the store (mooncake.json)
  std::string local_buffer_size;    // each instance's registered staging buffer
  std::string scheduling = "round_robin";     // proxy --scheduling
  std::vector<std::string> extra_serve_args;  // appended to every `crescent serve`
  std::string work_dir;                       // logs + mooncake.json; "" = a temp dir
  bool keep_work_dir = false;                 // a temp work dir is removed unless set
  std::chrono::seconds start_timeout{180};    // for the whole start-up
  std::chrono::milliseconds stop_grace{5000};  // SIGTERM -> SIGKILL
  // Polled while waiting: set from a signal watcher to abort Start().
  const std::atomic<bool>* cancel = nullptr;
};

// One process of the cluster.
struct Member {
  std::string name;     // "master", "prefill-0", "decode-1", "proxy", "instance"
  std::string role;     // "master" | "prefill" | "decode" | "proxy" | "colocated"
  std::string address;  // "127.0.0.1:8100" (the master: its gRPC address)
  int pid = 0;
  std::string log_path;
};

class Cluster {
 public:
  // Starts everything and waits until all are healthy. On failure stops
  // what it started (ports freed) and returns an error naming the culprit,
  // with its log tail; CANCELLED when options.cancel was set.
  static StatusOr<std::unique_ptr<Cluster>> Start(ClusterOptions options);
  virtual ~Cluster() = default;  // Stop()s

  // "http://127.0.0.1:8000": where clients send OpenAI requests.
  virtual std::string base_url() const = 0;
  virtual const std::string& served_model_name() const = 0;
  virtual const std::vector<Member>& members() const = 0;
  virtual const std::string& work_dir() const = 0;
  // "" when not disaggregated.
  virtual const std::string& mooncake_config_path() const = 0;

  // OK while every process runs; else which one stopped, how, and its log tail.
  virtual Status CheckAlive() = 0;
  // The processes that exited since the last call, each as an error naming
  // it, how it ended and its log tail.
  virtual std::vector<Status> NewlyExited() = 0;
  // True while the cluster can still serve: the proxy and the master run and
  // at least one decode instance does (the proxy routes around dead
  // instances); for the colocated layout, while its instance runs.
  virtual bool CanServe() = 0;
  // Stops the proxy, then the instances, then the master (SIGTERM, then
  // SIGKILL after stop_grace). Idempotent.
  virtual void Stop() = 0;
};

// The OpenAI request a user can paste, against `base_url`.
std::string ExampleCurl(const std::string& base_url, const std::string& model_name);

// Memory an instance of the model in `model_dir` gets by default, in
// bytes, from its KV bytes per token t (layers x KV heads x head dim x K and
// V x 4-byte floats, the CPU backend's KV dtype):
//   kv_cache  32 Ki tokens, within [16 MiB, 1 GiB], at least one
//             max_model_len sequence (the pool is allocated at start-up:
//             small pools start fast)
//   segment   8 Ki tokens, within [256 MiB, 2 GiB]: what it adds to the store
//   buffer    2 Ki tokens (8 chunks of 256), within [64 MiB, 512 MiB]: the
//             staging buffer every chunk put or get passes through; too
//             small, and concurrent prompts' chunks wait for room
// Tiny model: 16 MiB / 256 MiB / 64 MiB; Qwen3-0.6B (229 KiB a token):
// 1 GiB / 1.8 GiB / 458 MiB.
struct MemorySizes {
  uint64_t kv_cache = 0, segment = 0, buffer = 0;
};
// kv_dtype_bytes: 4 for the CPU backend's float32 KV, 2 for CUDA's bf16.
StatusOr<MemorySizes> AutoMemorySizes(const std::string& model_dir, int max_model_len,
                                      int kv_dtype_bytes = 4);

// The running binary's path (/proc/self/exe resolved).
std::string SelfExe();

// Threads per instance when options.threads is 0.
int DefaultThreadsPerInstance(int instances);

}  // namespace crescent::cluster
