#include "model/make_model.h"

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "model/safetensors.h"
#include "model/weights.h"

namespace crescent::model {
namespace {

namespace fs = std::filesystem;

uint64_t SplitMix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint16_t FloatToF16(float f) {
  // Values here are small and normal: a plain round-to-nearest suffices.
  uint32_t b;
  std::memcpy(&b, &f, 4);
  uint32_t sign = (b >> 16) & 0x8000;
  int32_t exp = static_cast<int32_t>((b >> 23) & 0xff) - 127 + 15;
  uint32_t mant = b & 0x7fffff;
  if (exp <= 0) return static_cast<uint16_t>(sign);
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00);
  uint32_t h = sign | (exp << 10) | (mant >> 13);
  if ((mant & 0x1fff) > 0x1000 || ((mant & 0x1fff) == 0x1000 && (h & 1))) ++h;
  return static_cast<uint16_t>(h);
}

}  // namespace

std::vector<std::string> MakeModelShapes() {
  return {"qwen3-0.6b", "llama3.2-1b", "qwen2.5-0.5b", "tiny"};
}

StatusOr<ModelConfig> ModelShape(std::string_view shape) {
  ModelConfig c;
  c.torch_dtype = "bfloat16";
  if (shape == "qwen3-0.6b" || shape == "tiny") {
    c.arch = Architecture::kQwen3;
    c.qk_norm = true;
    c.vocab_size = 151936;
    c.hidden_size = 1024;
    c.intermediate_size = 3072;
    c.num_layers = 28;
    c.num_heads = 16;
    c.num_kv_heads = 8;
    c.head_dim = 128;
    c.rms_norm_eps = 1e-6;
    c.rope.theta = 1000000.0;
    c.max_position_embeddings = 40960;
    c.tie_word_embeddings = true;
    c.bos_token_id = 151643;
    c.eos_token_ids = {151645};
    if (shape == "tiny") {
      c.hidden_size = 64;
      c.intermediate_size = 128;
      c.num_layers = 2;
      c.num_heads = 4;
      c.num_kv_heads = 2;
      c.head_dim = 16;
    }
  } else if (shape == "llama3.2-1b") {
    c.arch = Architecture::kLlama;
    c.vocab_size = 128256;
    c.hidden_size = 2048;
    c.intermediate_size = 8192;
    c.num_layers = 16;
    c.num_heads = 32;
    c.num_kv_heads = 8;
    c.head_dim = 64;
    c.rms_norm_eps = 1e-5;
    c.rope = {RopeConfig::Type::kLlama3, 500000.0, 32.0, 1.0, 4.0, 8192};
    c.max_position_embeddings = 131072;
    c.tie_word_embeddings = true;
    c.bos_token_id = 128000;
    c.eos_token_ids = {128001, 128008, 128009};
  } else if (shape == "qwen2.5-0.5b") {
    c.arch = Architecture::kQwen2;
    c.attention_bias = true;
    c.vocab_size = 151936;
    c.hidden_size = 896;
    c.intermediate_size = 4864;
    c.num_layers = 24;
    c.num_heads = 14;
    c.num_kv_heads = 2;
    c.head_dim = 64;
    c.rms_norm_eps = 1e-6;
    c.rope.theta = 1000000.0;
    c.max_position_embeddings = 32768;
    c.tie_word_embeddings = true;
    c.bos_token_id = 151643;
    c.eos_token_ids = {151643};
  } else {
    return InvalidArgumentError("unknown shape \"" + std::string(shape) +
                                "\" (known: qwen3-0.6b, llama3.2-1b, qwen2.5-0.5b, tiny)");
  }
  return c;
}

Status WriteRandomCheckpoint(const ModelConfig& c, std::string_view out_dir, uint64_t seed,
                             std::string_view dtype_name) {
  DType dtype;
  if (dtype_name == "bf16") {
    dtype = DType::kBF16;
  } else if (dtype_name == "f16") {
    dtype = DType::kF16;
  } else if (dtype_name == "f32") {
    dtype = DType::kF32;
  } else {
    return InvalidArgumentError("dtype must be bf16, f16 or f32, got " + std::string(dtype_name));
  }
  std::error_code ec;
  fs::create_directories(std::string(out_dir), ec);
  if (ec) return InternalError("create " + std::string(out_dir) + ": " + ec.message());
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const int64_t QD = int64_t{c.num_heads} * D, KD = int64_t{c.num_kv_heads} * D;
  // (spec, scale): norms are 1 + noise, matrices noise of std ~ 1/sqrt(fan_in).
  std::vector<TensorSpec> specs;
  std::vector<std::pair<float, float>> dist;  // (mean, half-width of uniform)
  auto add = [&](std::string name, std::vector<int64_t> shape, float mean, float width) {
    specs.push_back({std::move(name), dtype, std::move(shape)});
    dist.emplace_back(mean, width);
  };
  const float wh = std::sqrt(3.0f / H), wi = std::sqrt(3.0f / I), wq = std::sqrt(3.0f / QD);
  add("model.embed_tokens.weight", {c.vocab_size, H}, 0.0f, 1.0f);
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H}, 1.0f, 0.1f);
    add(p + "self_attn.q_proj.weight", {QD, H}, 0.0f, wh);
    add(p + "self_attn.k_proj.weight", {KD, H}, 0.0f, wh);
    add(p + "self_attn.v_proj.weight", {KD, H}, 0.0f, wh);
    add(p + "self_attn.o_proj.weight", {H, QD}, 0.0f, wq);
    if (c.attention_bias) {
      add(p + "self_attn.q_proj.bias", {QD}, 0.0f, 0.1f);
      add(p + "self_attn.k_proj.bias", {KD}, 0.0f, 0.1f);
      add(p + "self_attn.v_proj.bias", {KD}, 0.0f, 0.1f);
      if (c.arch != Architecture::kQwen2) add(p + "self_attn.o_proj.bias", {H}, 0.0f, 0.1f);
    }
    if (c.qk_norm) {
      add(p + "self_attn.q_norm.weight", {D}, 1.0f, 0.1f);
      add(p + "self_attn.k_norm.weight", {D}, 1.0f, 0.1f);
    }
    add(p + "post_attention_layernorm.weight", {H}, 1.0f, 0.1f);
    add(p + "mlp.gate_proj.weight", {I, H}, 0.0f, wh);
    add(p + "mlp.up_proj.weight", {I, H}, 0.0f, wh);
    add(p + "mlp.down_proj.weight", {H, I}, 0.0f, wi);
    if (c.mlp_bias) {
      add(p + "mlp.gate_proj.bias", {I}, 0.0f, 0.1f);
      add(p + "mlp.up_proj.bias", {I}, 0.0f, 0.1f);
      add(p + "mlp.down_proj.bias", {H}, 0.0f, 0.1f);
    }
  }
  add("model.norm.weight", {H}, 1.0f, 0.1f);
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, H}, 0.0f, wh);

  const std::string dir(out_dir);
  RETURN_IF_ERROR(
      WriteSafetensors(dir + "/model.safetensors", specs, [&](size_t i, std::span<char> buf) {
        uint64_t state = seed * 0x100000001b3ull + i;
        const auto [mean, width] = dist[i];
        const size_t n = buf.size() / DTypeSize(dtype);
        for (size_t e = 0; e < n; ++e) {
          // Uniform in [mean - width, mean + width).
          const float u = static_cast<float>(SplitMix(state) >> 40) * (1.0f / 16777216.0f);
          const float v = mean + width * (2.0f * u - 1.0f);
          if (dtype == DType::kF32) {
            std::memcpy(buf.data() + e * 4, &v, 4);
          } else {
            const uint16_t h = dtype == DType::kBF16 ? FloatToBF16(v) : FloatToF16(v);
            std::memcpy(buf.data() + e * 2, &h, 2);
          }
        }
      }));
  ModelConfig written = c;
  written.torch_dtype = dtype == DType::kBF16  ? "bfloat16"
                        : dtype == DType::kF16 ? "float16"
                                               : "float32";
  std::ofstream(dir + "/config.json") << ModelConfigToJson(written);
  return OkStatus();
}

Status MakeModel(const MakeModelOptions& options) {
  if (options.out_dir.empty()) return InvalidArgumentError("--out is required");
  ASSIGN_OR_RETURN(ModelConfig config, ModelShape(options.shape));
  RETURN_IF_ERROR(WriteRandomCheckpoint(config, options.out_dir, options.seed, "bf16"));
  {
    std::ofstream gen(options.out_dir + "/generation_config.json");
    gen << "{\n  \"bos_token_id\": " << config.bos_token_id
        << ",\n  \"eos_token_id\": " << config.eos_token_ids.front()
        << ",\n  \"do_sample\": false\n}\n";
  }
  if (!options.tokenizer_dir.empty()) {
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
      const fs::path src = fs::path(options.tokenizer_dir) / f;
      if (!fs::exists(src)) {
        return NotFoundError("tokenizer directory " + options.tokenizer_dir + " has no " + f);
      }
      std::error_code ec;
      fs::copy_file(src, fs::path(options.out_dir) / f, fs::copy_options::overwrite_existing, ec);
      if (ec) return InternalError("copy " + src.string() + ": " + ec.message());
    }
  }
  return OkStatus();
}

}  // namespace crescent::model
