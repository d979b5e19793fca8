// Requests, outputs, options and statistics of the engine (engine_core.h,
// engine.h). Plain values; safe to copy between threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/kv_connector.h"
#include "engine/output_text.h"
#include "engine/sampler.h"
#include "engine/sampling_params.h"
#include "engine/sequence.h"

namespace crescent::engine {

// Engine knobs, with vLLM's flag names and defaults where they have one.
struct EngineOptions {
  int max_num_seqs = 256;             // --max-num-seqs
  int max_num_batched_tokens = 2048;  // --max-num-batched-tokens
  // --max-model-len: prompt + output tokens of one sequence at most. Must fit
  // the KV pool (num_blocks * block_size).
  int max_model_len = 2048;
  bool enable_prefix_caching = true;   // --enable-prefix-caching
  bool enable_chunked_prefill = true;  // off: max_num_batched_tokens >= max_model_len
  // Token ids that end a sequence unless ignore_eos (config/generation
  // config eos_token_id).
  std::vector<int32_t> eos_token_ids;
  // Makes incremental detokenizers; null: outputs carry no text and stop
  // strings are rejected.
  TextStreamFactory detokenizer;
  // Optional, not owned; must outlive the engine (kv_connector.h).
  KvConnector* kv_connector = nullptr;
  // Seeds the generator that seeds requests without a seed.
  uint64_t seed = 0;
};

struct EngineRequest {
  std::string request_id;         // unique among unfinished requests
  std::vector<int32_t> prompt;    // token ids, at least one
  SamplingParams params;
  bool skip_special_tokens = true;  // for the detokenized text
};

// A delta of one sequence (sample `index` of the request): the tokens,
// text and logprobs produced since its previous delta. The last delta of a
// sequence has `finish` set; the last of the request also request_finished.
struct RequestOutput {
  std::string request_id;
  int index = 0;
  std::vector<int32_t> new_tokens;
  std::string text;                         // detokenized delta
  std::vector<TokenLogprobs> logprobs;      // one per new token, if asked
  std::optional<FinishReason> finish;
  StopReason stop_reason;                   // with kStop
  bool request_finished = false;
  Status error;                             // with kError: what failed
  int num_prompt_tokens = 0;
  int num_cached_tokens = 0;                // prompt tokens not computed here
  int num_output_tokens = 0;                // of this sequence so far
};

// Counters (monotonic, since start) and gauges (now), for /metrics with
// vLLM's names.
struct EngineStats {
  int num_running = 0;                   // vllm:num_requests_running (sequences)
  int num_waiting = 0;                   // vllm:num_requests_waiting (sequences)
  double kv_cache_usage = 0.0;           // vllm:kv_cache_usage_perc, 0..1
  int num_blocks = 0;
  int num_free_blocks = 0;
  uint64_t prefix_cache_queries = 0;     // tokens
  uint64_t prefix_cache_hits = 0;        // tokens
  uint64_t prompt_tokens_total = 0;
  uint64_t generation_tokens_total = 0;
  uint64_t num_preemptions = 0;
  uint64_t num_steps = 0;
  double step_seconds_total = 0.0;     // wall time inside steps
  double forward_seconds_total = 0.0;  // of which in the model's forward pass
  uint64_t kv_connector_loaded_tokens = 0;
  uint64_t kv_connector_failed_loads = 0;
};

}  // namespace crescent::engine
