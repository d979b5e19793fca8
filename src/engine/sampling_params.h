// Per-request sampling parameters, with vLLM's names and defaults.
//
// Processing order for each new token (as vLLM): penalties on the raw
// logits (repetition over prompt and output, presence and frequency over the
// output), then temperature (0 means greedy), then top_k, top_p and min_p
// filters, then a draw from the request's own random generator. Logprobs are
// those of the raw model logits (vLLM's default "raw_logprobs").
//
// Thread safety: a value type.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace crescent::engine {

struct SamplingParams {
  int n = 1;                        // independent samples of one prompt
  float temperature = 1.0f;         // 0 (or below 1e-5): greedy
  float top_p = 1.0f;               // (0, 1]; smallest set with mass >= top_p
  int top_k = 0;                    // 0 or -1: off; else keep the k best
  float min_p = 0.0f;               // [0, 1]; drop p < min_p * p_max
  float repetition_penalty = 1.0f;  // > 0; tokens seen in prompt or output
  float presence_penalty = 0.0f;    // [-2, 2]; output tokens, once each
  float frequency_penalty = 0.0f;   // [-2, 2]; output tokens, per occurrence
  // Seeds the request's generator: the same seed, prompt and parameters give
  // the same tokens, whatever else runs in the batch. Sample i of n uses
  // seed + i. Without a seed the engine draws one.
  std::optional<uint64_t> seed;
  int max_tokens = 16;              // output tokens at most (>= 1)
  int min_tokens = 0;               // EOS and stop ids ignored before this
  std::vector<std::string> stop;    // stop strings, on detokenized text
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  bool include_stop_str_in_output = false;
  // Top logprobs to return per output token (0..20); nullopt: none. With 0
  // only the sampled token's logprob is returned.
  std::optional<int> logprobs;

  bool greedy() const { return temperature < 1e-5f; }

  // Checks ranges; messages name the field and the allowed range.
  Status Validate(int vocab_size) const;
};

inline constexpr int kMaxLogprobs = 20;

}  // namespace crescent::engine
