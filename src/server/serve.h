// `crescent serve`: one inference instance (model runtime + engine +
// OpenAI-compatible HTTP API, optionally a KV connector), with vLLM's flag
// names and defaults. apps/cmd_serve.cc maps the command line onto
// ServeOptions; RunServe runs until SIGINT/SIGTERM.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace crescent::server {

struct ServeOptions {
  std::string model;                    // --model DIR (Hugging Face checkpoint)
  std::string tokenizer;                // --tokenizer DIR; "" = --model
  std::string host = "0.0.0.0";         // --host
  int port = 8000;                      // --port
  int max_model_len = 0;                // --max-model-len; 0 = config max_position_embeddings
  // --gpu-memory-utilization: on CUDA the fraction of GPU memory; on the CPU
  // the fraction of the host's available memory (MemAvailable at start,
  // less the weight files) that the KV pool may take.
  double gpu_memory_utilization = 0.9;
  // --kv-cache-memory-bytes SIZE ("4GiB"): the KV pool size; overrides
  // --gpu-memory-utilization.
  std::string kv_cache_memory;
  int max_num_seqs = 256;               // --max-num-seqs
  int max_num_batched_tokens = 2048;    // --max-num-batched-tokens
  int block_size = 16;                  // --block-size
  std::string device = "cpu";           // --device cpu|cuda
  std::vector<std::string> served_model_names;  // --served-model-name (default: --model)
  std::string kv_transfer_config;       // --kv-transfer-config JSON
  int tensor_parallel_size = 1;         // -tp / --tensor-parallel-size (1 only)
  bool enable_prefix_caching = true;    // --enable-prefix-caching / --no-enable-prefix-caching
  uint64_t seed = 0;                    // --seed
  int threads = 0;                      // --threads: CPU compute threads, 0 = all
  int api_threads = 1;                  // --api-threads: HTTP io threads
};

// Checks the flags that need no model (tp, device, block size, ranges,
// --kv-transfer-config). INVALID_ARGUMENT names the flag.
Status ValidateServeOptions(const ServeOptions& options);

// Loads the model, starts the engine and the HTTP server, logs
// "serving MODEL on HOST:PORT", and blocks until SIGINT or SIGTERM; then
// stops accepting, aborts what runs and returns OK.
Status RunServe(const ServeOptions& options);

}  // namespace crescent::server
