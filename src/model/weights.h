// ModelWeights: the tensors of a checkpoint bound to a ModelConfig, every
// shape and dtype checked, for the backends and the reference forward.
//
// Tensor names follow the Hugging Face layout (model.layers.N.self_attn.
// q_proj.weight, ...). Matrices are row-major [out_features][in_features]
// (torch nn.Linear), in F32, F16 or BF16 as the checkpoint stores them.
// Errors name the tensor, the expected shape and what was found.
//
// Thread safety: immutable; views borrow the Checkpoint, which must outlive
// the ModelWeights.
#pragma once

#include <vector>

#include "common/status.h"
#include "model/model_config.h"
#include "model/safetensors.h"

namespace crescent::model {

struct LayerWeights {
  const TensorView* input_norm = nullptr;  // [H]
  const TensorView* q_proj = nullptr;      // [Hq*D, H]
  const TensorView* k_proj = nullptr;      // [Hkv*D, H]
  const TensorView* v_proj = nullptr;      // [Hkv*D, H]
  const TensorView* o_proj = nullptr;      // [H, Hq*D]
  const TensorView* q_bias = nullptr;      // [Hq*D]  attention_bias only
  const TensorView* k_bias = nullptr;      // [Hkv*D] attention_bias only
  const TensorView* v_bias = nullptr;      // [Hkv*D] attention_bias only
  const TensorView* o_bias = nullptr;      // [H]     Llama attention_bias only
  const TensorView* q_norm = nullptr;      // [D]     Qwen3 only
  const TensorView* k_norm = nullptr;      // [D]     Qwen3 only
  const TensorView* post_norm = nullptr;   // [H]  post_attention_layernorm
  const TensorView* gate_proj = nullptr;   // [I, H]
  const TensorView* up_proj = nullptr;     // [I, H]
  const TensorView* down_proj = nullptr;   // [H, I]
  const TensorView* gate_bias = nullptr;   // [I]  mlp_bias only
  const TensorView* up_bias = nullptr;     // [I]  mlp_bias only
  const TensorView* down_bias = nullptr;   // [H]  mlp_bias only
};

struct ModelWeights {
  const TensorView* embed = nullptr;       // [V, H]
  std::vector<LayerWeights> layers;        // [L]
  const TensorView* final_norm = nullptr;  // [H]
  const TensorView* lm_head = nullptr;     // [V, H]; == embed when tied
};

StatusOr<ModelWeights> BindWeights(const Checkpoint& checkpoint, const ModelConfig& config);

// Widens a 1-D or any tensor's elements to float32 (F32/F16/BF16 only).
std::vector<float> ToFloat(const TensorView& t);

// Element conversions shared by the kernels and the reference path.
inline float BF16ToFloat(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}
float F16ToFloat(uint16_t v);
// Round-to-nearest-even, as torch does.
uint16_t FloatToBF16(float f);

}  // namespace crescent::model
