#include "model/model_config.h"

#include <gtest/gtest.h>

namespace crescent::model {
namespace {

constexpr const char* kQwen3 = R"({
  "architectures": ["Qwen3ForCausalLM"], "vocab_size": 512, "hidden_size": 64,
  "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4,
  "num_key_value_heads": 2, "head_dim": 32, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "rope_scaling": null, "tie_word_embeddings": true,
  "eos_token_id": [151645, 151643], "bos_token_id": 1, "hidden_act": "silu",
  "use_sliding_window": false, "sliding_window": null, "torch_dtype": "bfloat16"})";

TEST(ModelConfigTest, ParsesQwen3WithExplicitHeadDim) {
  auto c = ParseModelConfig(kQwen3);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->arch, Architecture::kQwen3);
  EXPECT_EQ(c->head_dim, 32);  // not hidden / heads = 16
  EXPECT_TRUE(c->qk_norm);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_DOUBLE_EQ(c->rope.theta, 1e6);
  EXPECT_EQ(c->rope.type, RopeConfig::Type::kDefault);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int32_t>{151645, 151643}));
}

TEST(ModelConfigTest, ParsesFixtureConfigs) {
  auto llama = LoadModelConfig("tests/data/models/tiny-llama3");
  ASSERT_TRUE(llama.ok()) << llama.status().ToString();
  EXPECT_EQ(llama->rope.type, RopeConfig::Type::kLlama3);
  EXPECT_DOUBLE_EQ(llama->rope.factor, 8.0);
  EXPECT_EQ(llama->rope.original_max_position, 64);
  auto qwen2 = LoadModelConfig("tests/data/models/tiny-qwen2");
  ASSERT_TRUE(qwen2.ok());
  EXPECT_TRUE(qwen2->attention_bias);  // Qwen2 always biases q/k/v
  EXPECT_EQ(qwen2->num_kv_heads, 1);
  EXPECT_EQ(qwen2->head_dim, 16);  // hidden / heads
  EXPECT_FALSE(qwen2->tie_word_embeddings);
}

TEST(ModelConfigTest, NewerRopeParametersLayout) {
  auto c = ParseModelConfig(
      R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10,
      "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 2, "rope_parameters": {"rope_type": "llama3",
      "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}})");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->rope.type, RopeConfig::Type::kLlama3);
  EXPECT_DOUBLE_EQ(c->rope.theta, 500000.0);
  EXPECT_EQ(c->num_kv_heads, 2);  // defaults to num_attention_heads
}

TEST(ModelConfigTest, ErrorsNameTheProblem) {
  auto bad_arch = ParseModelConfig(R"({"architectures": ["MixtralForCausalLM"]})");
  EXPECT_EQ(bad_arch.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(bad_arch.status().message().find("MixtralForCausalLM"), std::string::npos);
  EXPECT_NE(bad_arch.status().message().find("Qwen3ForCausalLM"), std::string::npos);

  auto missing = ParseModelConfig(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10})");
  EXPECT_EQ(missing.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(missing.status().message().find("hidden_size"), std::string::npos);

  auto rope = ParseModelConfig(
      R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10,
      "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 2, "rope_scaling": {"type": "yarn", "factor": 4.0}})");
  EXPECT_EQ(rope.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(rope.status().message().find("yarn"), std::string::npos);

  auto gqa = ParseModelConfig(
      R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 10,
      "hidden_size": 12, "intermediate_size": 16, "num_hidden_layers": 1,
      "num_attention_heads": 3, "num_key_value_heads": 2})");
  EXPECT_EQ(gqa.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(gqa.status().message().find("num_key_value_heads"), std::string::npos);

  auto dir = LoadModelConfig("/nonexistent-model-dir");
  EXPECT_EQ(dir.status().code(), StatusCode::kNotFound);
}

TEST(ModelConfigTest, JsonRoundTrip) {
  auto c = ParseModelConfig(kQwen3);
  ASSERT_TRUE(c.ok());
  auto again = ParseModelConfig(ModelConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->head_dim, c->head_dim);
  EXPECT_EQ(again->eos_token_ids, c->eos_token_ids);
  EXPECT_EQ(again->qk_norm, c->qk_norm);
  EXPECT_DOUBLE_EQ(again->rope.theta, c->rope.theta);
}

}  // namespace
}  // namespace crescent::model
