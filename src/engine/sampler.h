// Sampling one token from a row of logits, per SamplingParams.
//
// The sampler is stateless; randomness comes from the caller's per-sequence
// generator (SamplerRng), so a seeded request draws the same tokens whatever
// else shares its batch, and a preempted sequence resumes its stream.
//
// Thread safety: Sample is reentrant (no shared state).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include "engine/sampling_params.h"

namespace crescent::engine {

using SamplerRng = std::mt19937_64;

// The logprob of one output token and the best alternatives.
struct TokenLogprobs {
  int32_t token = 0;
  float logprob = 0.0f;
  int rank = 1;  // 1 + number of tokens with a larger logit
  std::vector<std::pair<int32_t, float>> top;  // (token, logprob), best first
};

struct SampleResult {
  int32_t token = 0;
  std::optional<TokenLogprobs> logprobs;  // when params.logprobs is set
};

// Samples the next token. `logits` ([vocab]) is modified in place (penalties,
// temperature, filters). `prompt` and `output` are the sequence's tokens so
// far, for the penalties. `rng` is consumed only when not greedy (one draw
// per token).
SampleResult Sample(std::span<float> logits, const SamplingParams& params,
                    std::span<const int32_t> prompt,
                    std::span<const int32_t> output, SamplerRng& rng);

// The pieces, exposed for tests.

// Repetition penalty over prompt+output tokens (positive logits divided,
// negative multiplied), then presence and frequency penalties over output.
void ApplyPenalties(std::span<float> logits, const SamplingParams& params,
                    std::span<const int32_t> prompt,
                    std::span<const int32_t> output);

// The tokens that survive min_p, top_k and top_p at `temperature` (in that
// order, as vLLM), with their renormalised probabilities: best first when
// top_k or top_p is set, in no particular order otherwise.
std::vector<std::pair<int32_t, float>> CandidateDistribution(
    std::span<const float> logits, const SamplingParams& params);

// log_softmax row statistics: logprob of `token` and the top `k` tokens.
TokenLogprobs ComputeLogprobs(std::span<const float> raw_logits, int32_t token, int k);

int32_t Argmax(std::span<const float> logits);

// The draw in [0, 1) that Sample takes from `rng` for a non-greedy token
// (53 random bits): what a device sampler gets instead (model_runner.h).
double DrawUniform(SamplerRng& rng);

}  // namespace crescent::engine
