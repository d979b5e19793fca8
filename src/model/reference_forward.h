// The reference forward pass: the model written as plainly as possible
// (scalar loops, double accumulators, no KV cache, the whole sequence at
// once) to check the fast backends against (STYLE item 9). Slow: for tests
// with tiny models only.
#pragma once

#include <vector>

#include "common/status.h"
#include "model/model_config.h"
#include "model/weights.h"

namespace crescent::model {

// Logits [tokens.size()][vocab] of every position of `tokens`.
StatusOr<std::vector<std::vector<float>>> ReferenceForward(const ModelConfig& config,
                                                           const ModelWeights& weights,
                                                           const std::vector<int32_t>& tokens);

}  // namespace crescent::model
