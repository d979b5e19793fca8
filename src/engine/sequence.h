// The engine's state for one sequence (one of a request's n samples).
// Internal to the engine: created by EngineCore, scheduled by Scheduler.
//
// The token stream is one vector (prompt then output); the model has
// computed KV for tokens [0, num_computed_tokens). Scheduling a sequence
// means computing the next tokens of that stream, so a decode step, a chunk
// of a prefill and the recompute of a preempted sequence are the same thing.
//
// Thread safety: none; lives on the engine thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/block_manager.h"
#include "engine/output_text.h"
#include "engine/sampler.h"
#include "engine/sampling_params.h"

namespace crescent::engine {

// kLoadingKv: admitted, its KV connector load in flight (holds its blocks,
// not scheduled until the load ends).
enum class SeqStatus { kWaiting, kLoadingKv, kRunning, kFinished };

enum class FinishReason { kStop, kLength, kAbort, kError };
// "stop", "length", "abort", "error" (OpenAI's finish_reason for the first two).
const char* FinishReasonName(FinishReason reason);

// Why a sequence stopped with kStop: the token id or the string matched;
// monostate for EOS.
using StopReason = std::variant<std::monostate, int32_t, std::string>;

struct Sequence {
  Sequence(std::string request_id, int index, uint64_t arrival,
           const SamplingParams* params, std::vector<int32_t> prompt)
      : request_id(std::move(request_id)), index(index), arrival(arrival),
        params(params), tokens(std::move(prompt)),
        num_prompt_tokens(static_cast<int>(tokens.size())),
        text(params->stop, params->include_stop_str_in_output) {}

  // Constant after construction.
  const std::string request_id;
  const int index;                 // which of the request's n samples
  const uint64_t arrival;          // admission order; lower is older
  const SamplingParams* params;    // owned by the request

  std::vector<int32_t> tokens;     // prompt then output
  const int num_prompt_tokens;
  int num_computed_tokens = 0;     // KV in the cache for tokens[0, this)
  SeqStatus status = SeqStatus::kWaiting;

  BlockTable blocks;
  std::vector<BlockHash> block_hashes;  // chained hashes of full blocks of tokens

  SamplerRng rng;
  std::unique_ptr<TextStream> detokenizer;  // null: no text output
  OutputText text;

  // Prompt tokens found in the prefix cache (or loaded by the KV connector)
  // when the sequence was first scheduled.
  int num_cached_tokens = -1;      // -1: not scheduled yet
  int num_preemptions = 0;
  bool prefill_reported = false;   // KV connector told of the full prompt
  uint64_t kv_load_id = 0;         // with kLoadingKv: the connector's load

  // Outputs produced since the last delta was handed out.
  std::vector<int32_t> pending_tokens;
  std::vector<TokenLogprobs> pending_logprobs;
  std::optional<FinishReason> finish;
  bool finish_reported = false;    // the delta with `finish` was handed out
  StopReason stop_reason;

  // Per-step scheduler scratch.
  bool scheduled_this_step = false;

  int num_output_tokens() const {
    return static_cast<int>(tokens.size()) - num_prompt_tokens;
  }
  std::span<const int32_t> prompt() const {
    return std::span<const int32_t>(tokens).first(num_prompt_tokens);
  }
  std::span<const int32_t> output() const {
    return std::span<const int32_t>(tokens).subspan(num_prompt_tokens);
  }
};

}  // namespace crescent::engine
