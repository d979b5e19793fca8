// Rotary position embedding tables, shared by every backend and the
// reference forward so that all compute the same angles.
//
// Hugging Face convention (rotate_half): for a head vector x of D dims and
// i < D/2, with angle a = position * inv_freq[i]:
//   x'[i]       = x[i] * cos(a) - x[i + D/2] * sin(a)
//   x'[i + D/2] = x[i + D/2] * cos(a) + x[i] * sin(a)
// inv_freq and the angle are rounded to float32 as torch computes them, and
// inv_freq further to the checkpoint's torch_dtype (see rope.cc: why).
#pragma once

#include <vector>

#include "model/model_config.h"

namespace crescent::model {

// [D/2] inverse frequencies after the config's scaling (default, linear,
// llama3).
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

// Fills cos/sin [D/2] for one position.
void RopeCosSin(const std::vector<float>& inv_freq, int64_t position, float* cos_out,
                float* sin_out);

// Rotates one head vector x[D] in place with the tables of its position.
void RopeApply(float* x, int head_dim, const float* cos_tab, const float* sin_tab);

}  // namespace crescent::model
