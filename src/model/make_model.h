// Random-weight checkpoints of real model shapes, in the Hugging Face
// layout (config.json + model.safetensors, bf16), so demos and benchmarks
// need no downloads. The weights are seeded noise: the model runs at the
// real model's cost but says nothing sensible.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/model_config.h"

namespace crescent::model {

// "qwen3-0.6b", "llama3.2-1b", "qwen2.5-0.5b", "tiny" (a 2-layer Qwen3
// with the real vocabulary: for tests and quick demos).
std::vector<std::string> MakeModelShapes();
StatusOr<ModelConfig> ModelShape(std::string_view shape);

struct MakeModelOptions {
  std::string shape = "tiny";
  std::string out_dir;
  uint64_t seed = 1;
  // Directory with tokenizer.json + tokenizer_config.json copied beside the
  // weights when it exists (the setup script puts the real Qwen3 files in
  // .cache/tokenizer-qwen3); empty = skip.
  std::string tokenizer_dir;
};

// Writes config.json, model.safetensors, generation_config.json and the
// tokenizer files (when found) into out_dir, creating it.
Status MakeModel(const MakeModelOptions& options);

// Writes a checkpoint of `config` with seeded random weights (any dims;
// tests use it for odd shapes). dtype: "bf16", "f16" or "f32".
Status WriteRandomCheckpoint(const ModelConfig& config, std::string_view out_dir, uint64_t seed,
                             std::string_view dtype = "bf16");

}  // namespace crescent::model
