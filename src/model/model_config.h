// ModelConfig: the architecture hyper-parameters of a Hugging Face
// checkpoint, parsed from its config.json.
//
// Accepts the layouts Hub checkpoints ship: the classic one (rope_theta and
// rope_scaling at the top level, "type" or "rope_type" inside rope_scaling)
// and the newer one (rope_parameters {rope_theta, rope_type, ...}).
// Supported architectures: LlamaForCausalLM, Qwen2ForCausalLM,
// Qwen3ForCausalLM (dense). Anything else is an UNIMPLEMENTED error naming
// the architecture and the supported ones.
//
// Thread safety: a plain value.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace crescent::model {

enum class Architecture { kLlama, kQwen2, kQwen3 };

// "LlamaForCausalLM", ...
std::string_view ArchitectureName(Architecture arch);

// RoPE frequency schedule. kDefault: inv_freq[i] = theta^(-2i/d).
// kLinear: inv_freq / factor. kLlama3: Llama 3.1's piecewise scaling of
// long wavelengths (factor, low/high_freq_factor, original_max_position).
struct RopeConfig {
  enum class Type { kDefault, kLinear, kLlama3 };
  Type type = Type::kDefault;
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
};

struct ModelConfig {
  Architecture arch = Architecture::kLlama;
  int32_t vocab_size = 0;
  int32_t hidden_size = 0;        // H
  int32_t intermediate_size = 0;  // I (SwiGLU width)
  int32_t num_layers = 0;         // L
  int32_t num_heads = 0;          // query heads, Hq
  int32_t num_kv_heads = 0;       // Hkv; Hq % Hkv == 0 (GQA/MQA)
  int32_t head_dim = 0;           // D; explicit "head_dim" or H / Hq
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;    // lm_head = embed_tokens when true
  bool attention_bias = false;         // q/k/v projections carry a bias (Qwen2: always)
  bool mlp_bias = false;               // Llama's mlp_bias (gate/up/down biases)
  bool qk_norm = false;                // per-head RMSNorm of q and k (Qwen3)
  std::vector<int32_t> eos_token_ids;  // from "eos_token_id" (number or list)
  int32_t bos_token_id = -1;           // -1 when absent
  std::string torch_dtype;             // "bfloat16", ... as written (informative)
};

// Parses config.json text; `source` names the file in error messages.
// Every error names the field and what was expected.
StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text,
                                       std::string_view source = "config.json");

// Reads <dir>/config.json.
StatusOr<ModelConfig> LoadModelConfig(std::string_view model_dir);

// Writes the classic Hub layout (what `crescent make-model` emits).
std::string ModelConfigToJson(const ModelConfig& config);

}  // namespace crescent::model
