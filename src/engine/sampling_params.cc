#include "engine/sampling_params.h"

#include <fmt/format.h>

namespace crescent::engine {

Status SamplingParams::Validate(int vocab_size) const {
  if (n < 1) return InvalidArgumentError(fmt::format("n must be at least 1, got {}", n));
  if (!(temperature >= 0.0f))
    return InvalidArgumentError(fmt::format("temperature must be non-negative, got {}", temperature));
  if (!(top_p > 0.0f && top_p <= 1.0f))
    return InvalidArgumentError(fmt::format("top_p must be in (0, 1], got {}", top_p));
  if (top_k < -1)
    return InvalidArgumentError(fmt::format("top_k must be -1 (disable), 0 (disable) or at least 1, got {}", top_k));
  if (!(min_p >= 0.0f && min_p <= 1.0f))
    return InvalidArgumentError(fmt::format("min_p must be in [0, 1], got {}", min_p));
  if (!(repetition_penalty > 0.0f))
    return InvalidArgumentError(fmt::format("repetition_penalty must be greater than zero, got {}", repetition_penalty));
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
    return InvalidArgumentError(fmt::format("presence_penalty must be in [-2, 2], got {}", presence_penalty));
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
    return InvalidArgumentError(fmt::format("frequency_penalty must be in [-2, 2], got {}", frequency_penalty));
  if (max_tokens < 1)
    return InvalidArgumentError(fmt::format("max_tokens must be at least 1, got {}", max_tokens));
  if (min_tokens < 0 || min_tokens > max_tokens)
    return InvalidArgumentError(fmt::format("min_tokens must be in [0, max_tokens={}], got {}", max_tokens, min_tokens));
  if (logprobs && (*logprobs < 0 || *logprobs > kMaxLogprobs))
    return InvalidArgumentError(fmt::format("logprobs must be in [0, {}], got {}", kMaxLogprobs, *logprobs));
  for (int32_t id : stop_token_ids) {
    if (id < 0 || id >= vocab_size)
      return InvalidArgumentError(fmt::format("stop_token_ids: {} is outside the vocabulary [0, {})", id, vocab_size));
  }
  for (const std::string& s : stop) {
    if (s.empty()) return InvalidArgumentError("stop: empty stop strings are not allowed");
  }
  return OkStatus();
}

}  // namespace crescent::engine
