#include "model/model_config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/config.h"

namespace crescent::model {
namespace {

using nlohmann::json;

std::string Where(std::string_view source, std::string_view field) {
  return std::string(source) + ": field \"" + std::string(field) + "\"";
}

// Reads an integer field; `required` fields that are absent are an error.
Status GetInt(const json& j, std::string_view source, const char* field, bool required,
              int64_t* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) {
    if (required) return InvalidArgumentError(Where(source, field) + " is missing (an integer)");
    return OkStatus();
  }
  if (!it->is_number_integer() || it->get<int64_t>() < 0) {
    return InvalidArgumentError(Where(source, field) + " must be a non-negative integer, got " +
                                it->dump());
  }
  *out = it->get<int64_t>();
  return OkStatus();
}

Status GetInt32(const json& j, std::string_view source, const char* field, bool required,
                int32_t* out) {
  int64_t v = *out;
  RETURN_IF_ERROR(GetInt(j, source, field, required, &v));
  if (v > INT32_MAX) return InvalidArgumentError(Where(source, field) + " is too large");
  *out = static_cast<int32_t>(v);
  return OkStatus();
}

Status GetDouble(const json& j, std::string_view source, const char* field, double* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return OkStatus();
  if (!it->is_number()) {
    return InvalidArgumentError(Where(source, field) + " must be a number, got " + it->dump());
  }
  *out = it->get<double>();
  return OkStatus();
}

Status GetBool(const json& j, std::string_view source, const char* field, bool* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return OkStatus();
  if (!it->is_boolean()) {
    return InvalidArgumentError(Where(source, field) + " must be true or false, got " + it->dump());
  }
  *out = it->get<bool>();
  return OkStatus();
}

// rope_scaling (classic) or rope_parameters (newer transformers) -> RopeConfig.
Status ParseRope(const json& scaling, std::string_view source, const char* field,
                 RopeConfig* rope) {
  if (scaling.is_null()) return OkStatus();
  if (!scaling.is_object()) {
    return InvalidArgumentError(Where(source, field) + " must be an object or null");
  }
  std::string type = "default";
  for (const char* key : {"rope_type", "type"}) {
    if (scaling.contains(key) && scaling[key].is_string()) {
      type = scaling[key].get<std::string>();
      break;
    }
  }
  RETURN_IF_ERROR(GetDouble(scaling, source, "rope_theta", &rope->theta));
  RETURN_IF_ERROR(GetDouble(scaling, source, "factor", &rope->factor));
  RETURN_IF_ERROR(GetDouble(scaling, source, "low_freq_factor", &rope->low_freq_factor));
  RETURN_IF_ERROR(GetDouble(scaling, source, "high_freq_factor", &rope->high_freq_factor));
  RETURN_IF_ERROR(GetInt(scaling, source, "original_max_position_embeddings", false,
                         &rope->original_max_position));
  if (type == "default") {
    rope->type = RopeConfig::Type::kDefault;
  } else if (type == "linear") {
    rope->type = RopeConfig::Type::kLinear;
  } else if (type == "llama3") {
    rope->type = RopeConfig::Type::kLlama3;
    if (rope->high_freq_factor <= rope->low_freq_factor) {
      return InvalidArgumentError(Where(source, field) +
                                  ": llama3 scaling needs high_freq_factor > low_freq_factor");
    }
  } else {
    return UnimplementedError(Where(source, field) + ": rope type \"" + type +
                              "\" is not supported (supported: default, linear, llama3)");
  }
  if (!(rope->factor > 0))
    return InvalidArgumentError(Where(source, field) + ": factor must be > 0");
  return OkStatus();
}

}  // namespace

std::string_view ArchitectureName(Architecture arch) {
  switch (arch) {
    case Architecture::kLlama:
      return "LlamaForCausalLM";
    case Architecture::kQwen2:
      return "Qwen2ForCausalLM";
    case Architecture::kQwen3:
      return "Qwen3ForCausalLM";
  }
  return "?";
}

StatusOr<ModelConfig> ParseModelConfig(std::string_view json_text, std::string_view source) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgumentError(std::string(source) + ": not a JSON object");
  }
  ModelConfig c;
  std::string arch_name;
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty() &&
      j["architectures"][0].is_string()) {
    arch_name = j["architectures"][0].get<std::string>();
  } else {
    return InvalidArgumentError(Where(source, "architectures") +
                                " is missing (e.g. [\"Qwen3ForCausalLM\"])");
  }
  if (arch_name == "LlamaForCausalLM") {
    c.arch = Architecture::kLlama;
  } else if (arch_name == "Qwen2ForCausalLM") {
    c.arch = Architecture::kQwen2;
    c.attention_bias = true;  // Qwen2 always has q/k/v biases
  } else if (arch_name == "Qwen3ForCausalLM") {
    c.arch = Architecture::kQwen3;
    c.qk_norm = true;
  } else {
    return UnimplementedError(std::string(source) + ": architecture \"" + arch_name +
                              "\" is not supported (supported: LlamaForCausalLM, "
                              "Qwen2ForCausalLM, Qwen3ForCausalLM)");
  }
  RETURN_IF_ERROR(GetInt32(j, source, "vocab_size", true, &c.vocab_size));
  RETURN_IF_ERROR(GetInt32(j, source, "hidden_size", true, &c.hidden_size));
  RETURN_IF_ERROR(GetInt32(j, source, "intermediate_size", true, &c.intermediate_size));
  RETURN_IF_ERROR(GetInt32(j, source, "num_hidden_layers", true, &c.num_layers));
  RETURN_IF_ERROR(GetInt32(j, source, "num_attention_heads", true, &c.num_heads));
  c.num_kv_heads = c.num_heads;
  RETURN_IF_ERROR(GetInt32(j, source, "num_key_value_heads", false, &c.num_kv_heads));
  for (auto [name, v] : {std::pair{"vocab_size", c.vocab_size},
                         {"hidden_size", c.hidden_size},
                         {"intermediate_size", c.intermediate_size},
                         {"num_hidden_layers", c.num_layers},
                         {"num_attention_heads", c.num_heads},
                         {"num_key_value_heads", c.num_kv_heads}}) {
    if (v <= 0) return InvalidArgumentError(Where(source, name) + " must be > 0");
  }
  if (c.num_heads % c.num_kv_heads != 0) {
    return InvalidArgumentError(
        Where(source, "num_key_value_heads") + " (" + std::to_string(c.num_kv_heads) +
        ") must divide num_attention_heads (" + std::to_string(c.num_heads) + ")");
  }
  if (j.contains("head_dim") && !j["head_dim"].is_null()) {
    RETURN_IF_ERROR(GetInt32(j, source, "head_dim", true, &c.head_dim));
  } else {
    if (c.hidden_size % c.num_heads != 0) {
      return InvalidArgumentError(std::string(source) +
                                  ": no head_dim and hidden_size is not a multiple of "
                                  "num_attention_heads");
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) {
    return InvalidArgumentError(Where(source, "head_dim") + " must be even and > 0 (RoPE)");
  }
  RETURN_IF_ERROR(GetDouble(j, source, "rms_norm_eps", &c.rms_norm_eps));
  RETURN_IF_ERROR(GetInt(j, source, "max_position_embeddings", false, &c.max_position_embeddings));
  RETURN_IF_ERROR(GetBool(j, source, "tie_word_embeddings", &c.tie_word_embeddings));
  if (c.arch != Architecture::kQwen2) {
    RETURN_IF_ERROR(GetBool(j, source, "attention_bias", &c.attention_bias));
  }
  if (c.arch == Architecture::kLlama) RETURN_IF_ERROR(GetBool(j, source, "mlp_bias", &c.mlp_bias));

  if (j.contains("hidden_act") && j["hidden_act"] != "silu") {
    return UnimplementedError(Where(source, "hidden_act") + " is " + j["hidden_act"].dump() +
                              "; only \"silu\" (SwiGLU) is supported");
  }
  bool sliding = false;
  RETURN_IF_ERROR(GetBool(j, source, "use_sliding_window", &sliding));
  if (sliding) {
    return UnimplementedError(Where(source, "use_sliding_window") +
                              " is true; sliding-window attention is not supported");
  }
  // RoPE: classic top-level rope_theta + rope_scaling, or rope_parameters.
  RETURN_IF_ERROR(GetDouble(j, source, "rope_theta", &c.rope.theta));
  if (j.contains("rope_scaling")) {
    RETURN_IF_ERROR(ParseRope(j["rope_scaling"], source, "rope_scaling", &c.rope));
  }
  if (j.contains("rope_parameters")) {
    RETURN_IF_ERROR(ParseRope(j["rope_parameters"], source, "rope_parameters", &c.rope));
  }
  if (!(c.rope.theta > 0))
    return InvalidArgumentError(Where(source, "rope_theta") + " must be > 0");

  if (j.contains("eos_token_id")) {
    const json& e = j["eos_token_id"];
    if (e.is_number_integer()) c.eos_token_ids.push_back(e.get<int32_t>());
    if (e.is_array()) {
      for (const json& x : e) {
        if (x.is_number_integer()) c.eos_token_ids.push_back(x.get<int32_t>());
      }
    }
  }
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) {
    c.bos_token_id = j["bos_token_id"].get<int32_t>();
  }
  for (const char* key : {"torch_dtype", "dtype"}) {
    if (j.contains(key) && j[key].is_string()) c.torch_dtype = j[key].get<std::string>();
  }
  return c;
}

StatusOr<ModelConfig> LoadModelConfig(std::string_view model_dir) {
  std::string path = std::string(model_dir) + "/config.json";
  auto text = ReadFile(path);
  if (!text.ok()) {
    return Status(text.status().code(), text.status().message() +
                                            " (a model directory holds config.json and "
                                            "model.safetensors, as on the Hugging Face Hub)");
  }
  return ParseModelConfig(*text, path);
}

std::string ModelConfigToJson(const ModelConfig& c) {
  json j;
  j["architectures"] = {std::string(ArchitectureName(c.arch))};
  j["model_type"] = c.arch == Architecture::kLlama   ? "llama"
                    : c.arch == Architecture::kQwen2 ? "qwen2"
                                                     : "qwen3";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["hidden_act"] = "silu";
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope.theta;
  if (c.rope.type == RopeConfig::Type::kDefault) {
    j["rope_scaling"] = nullptr;
  } else {
    json s;
    s["rope_type"] = c.rope.type == RopeConfig::Type::kLlama3 ? "llama3" : "linear";
    s["factor"] = c.rope.factor;
    if (c.rope.type == RopeConfig::Type::kLlama3) {
      s["low_freq_factor"] = c.rope.low_freq_factor;
      s["high_freq_factor"] = c.rope.high_freq_factor;
      s["original_max_position_embeddings"] = c.rope.original_max_position;
    }
    j["rope_scaling"] = s;
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.arch != Architecture::kQwen2) j["attention_bias"] = c.attention_bias;
  if (c.arch == Architecture::kLlama) j["mlp_bias"] = c.mlp_bias;
  j["torch_dtype"] = c.torch_dtype.empty() ? "bfloat16" : c.torch_dtype;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  j["use_cache"] = true;
  if (c.arch != Architecture::kLlama) j["use_sliding_window"] = false;
  return j.dump(2) + "\n";
}

}  // namespace crescent::model
