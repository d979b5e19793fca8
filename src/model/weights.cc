#include "model/weights.h"

#include <cmath>
#include <cstring>

namespace crescent::model {
namespace {

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

StatusOr<const TensorView*> Bind(const Checkpoint& ckpt, const std::string& name,
                                 std::vector<int64_t> shape) {
  auto found = ckpt.Find(name);
  if (!found.ok()) {
    return NotFoundError("tensor " + name + " (expected shape " + ShapeString(shape) +
                         ", F32/F16/BF16) is missing from the checkpoint in " + ckpt.dir());
  }
  const TensorView* t = *found;
  if (t->shape != shape) {
    return InvalidArgumentError("tensor " + name + " has shape " + t->ShapeString() +
                                ", expected " + ShapeString(shape) +
                                " from config.json (checkpoint in " + ckpt.dir() + ")");
  }
  if (t->dtype != DType::kF32 && t->dtype != DType::kF16 && t->dtype != DType::kBF16) {
    return UnimplementedError("tensor " + name + " has dtype " + std::string(DTypeName(t->dtype)) +
                              "; only F32, F16 and BF16 weights are supported");
  }
  return t;
}

}  // namespace

StatusOr<ModelWeights> BindWeights(const Checkpoint& ckpt, const ModelConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const int64_t QD = int64_t{c.num_heads} * D, KD = int64_t{c.num_kv_heads} * D;
  ModelWeights w;
  ASSIGN_OR_RETURN(w.embed, Bind(ckpt, "model.embed_tokens.weight", {c.vocab_size, H}));
  ASSIGN_OR_RETURN(w.final_norm, Bind(ckpt, "model.norm.weight", {H}));
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    ASSIGN_OR_RETURN(w.lm_head, Bind(ckpt, "lm_head.weight", {c.vocab_size, H}));
  }
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights lw;
    ASSIGN_OR_RETURN(lw.input_norm, Bind(ckpt, p + "input_layernorm.weight", {H}));
    ASSIGN_OR_RETURN(lw.post_norm, Bind(ckpt, p + "post_attention_layernorm.weight", {H}));
    ASSIGN_OR_RETURN(lw.q_proj, Bind(ckpt, p + "self_attn.q_proj.weight", {QD, H}));
    ASSIGN_OR_RETURN(lw.k_proj, Bind(ckpt, p + "self_attn.k_proj.weight", {KD, H}));
    ASSIGN_OR_RETURN(lw.v_proj, Bind(ckpt, p + "self_attn.v_proj.weight", {KD, H}));
    ASSIGN_OR_RETURN(lw.o_proj, Bind(ckpt, p + "self_attn.o_proj.weight", {H, QD}));
    if (c.attention_bias) {
      ASSIGN_OR_RETURN(lw.q_bias, Bind(ckpt, p + "self_attn.q_proj.bias", {QD}));
      ASSIGN_OR_RETURN(lw.k_bias, Bind(ckpt, p + "self_attn.k_proj.bias", {KD}));
      ASSIGN_OR_RETURN(lw.v_bias, Bind(ckpt, p + "self_attn.v_proj.bias", {KD}));
      // Llama's attention_bias also biases o_proj; Qwen2's never does.
      if (c.arch != Architecture::kQwen2) {
        ASSIGN_OR_RETURN(lw.o_bias, Bind(ckpt, p + "self_attn.o_proj.bias", {H}));
      }
    }
    if (c.qk_norm) {
      ASSIGN_OR_RETURN(lw.q_norm, Bind(ckpt, p + "self_attn.q_norm.weight", {D}));
      ASSIGN_OR_RETURN(lw.k_norm, Bind(ckpt, p + "self_attn.k_norm.weight", {D}));
    }
    ASSIGN_OR_RETURN(lw.gate_proj, Bind(ckpt, p + "mlp.gate_proj.weight", {I, H}));
    ASSIGN_OR_RETURN(lw.up_proj, Bind(ckpt, p + "mlp.up_proj.weight", {I, H}));
    ASSIGN_OR_RETURN(lw.down_proj, Bind(ckpt, p + "mlp.down_proj.weight", {H, I}));
    if (c.mlp_bias) {
      ASSIGN_OR_RETURN(lw.gate_bias, Bind(ckpt, p + "mlp.gate_proj.bias", {I}));
      ASSIGN_OR_RETURN(lw.up_bias, Bind(ckpt, p + "mlp.up_proj.bias", {I}));
      ASSIGN_OR_RETURN(lw.down_bias, Bind(ckpt, p + "mlp.down_proj.bias", {H}));
    }
    w.layers.push_back(lw);
  }
  return w;
}

float F16ToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToBF16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f)) return 0x7fc0;
  bits += 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

std::vector<float> ToFloat(const TensorView& t) {
  const size_t n = static_cast<size_t>(t.NumElements());
  std::vector<float> out(n);
  const auto* u16 = static_cast<const uint16_t*>(t.data);
  switch (t.dtype) {
    case DType::kF32:
      std::memcpy(out.data(), t.data, n * 4);
      break;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) out[i] = BF16ToFloat(u16[i]);
      break;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) out[i] = F16ToFloat(u16[i]);
      break;
    default:
      break;  // BindWeights admits only the three float types
  }
  return out;
}

}  // namespace crescent::model
