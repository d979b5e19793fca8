// `crescent serve`: an OpenAI-compatible inference instance, with vLLM's
// flag names and defaults (see src/server/serve.h).
#include <memory>

#include "apps/command.h"
#include "server/serve.h"

namespace crescent::apps {
namespace {

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "serve", "OpenAI-compatible inference server (vLLM's flags): continuous batching, prefix caching");
  auto o = std::make_shared<server::ServeOptions>();
  cmd->add_option("--model", o->model, "Hugging Face model directory")->required();
  cmd->add_option("--tokenizer", o->tokenizer,
                  "Directory with tokenizer.json (default: --model; without one only token-id "
                  "prompts are served)");
  cmd->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "Port to listen on")->capture_default_str();
  cmd->add_option("--max-model-len", o->max_model_len,
                  "Context length: prompt + output tokens (default: the model's "
                  "max_position_embeddings)");
  cmd->add_option("--gpu-memory-utilization", o->gpu_memory_utilization,
                  "Share of total GPU memory this instance may use (--device cuda: the KV "
                  "cache gets it less weights and activations); with --device cpu the share of "
                  "the host's available memory (MemAvailable, less the weights)")
      ->capture_default_str();
  cmd->add_option("--kv-cache-memory-bytes,--kv-cache-memory", o->kv_cache_memory,
                  "KV cache size, e.g. 4GiB (overrides --gpu-memory-utilization)");
  cmd->add_option("--max-num-seqs", o->max_num_seqs, "Sequences per batch at most")
      ->capture_default_str();
  cmd->add_option("--max-num-batched-tokens", o->max_num_batched_tokens,
                  "Tokens per engine step at most (prefill chunks + decodes)")
      ->capture_default_str();
  cmd->add_option("--block-size", o->block_size, "Tokens per KV block")->capture_default_str();
  cmd->add_option("--device", o->device, "cpu | cuda (cuda needs a build with the CUDA backend)")
      ->capture_default_str();
  cmd->add_option("--served-model-name", o->served_model_names,
                  "Model name(s) in the API (default: --model); the first is reported");
  cmd->add_option("--kv-transfer-config", o->kv_transfer_config,
                  "Disaggregated prefill/decode: '{\"kv_connector\":\"MooncakeStoreConnector\","
                  "\"kv_role\":\"kv_producer|kv_consumer|kv_both\"}' (store from "
                  "$MOONCAKE_CONFIG_PATH)");
  cmd->add_option("--tensor-parallel-size", o->tensor_parallel_size,
                  "Tensor parallelism (-tp); only 1 is supported")
      ->capture_default_str();
  cmd->add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", o->enable_prefix_caching,
                "Automatic prefix caching (default on)");
  cmd->add_option("--seed", o->seed, "Seed for requests without one")->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU compute threads (0 = all CPUs)")
      ->capture_default_str();
  cmd->add_option("--api-threads", o->api_threads, "HTTP io threads")->capture_default_str();
  cmd->callback([o] { ExitWith(server::RunServe(*o)); });
}

CRESCENT_REGISTER_COMMAND(serve, Setup);

}  // namespace
}  // namespace crescent::apps
