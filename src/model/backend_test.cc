// The CPU backend against the scalar reference forward, and the KV block
// API the connector uses.
#include "model/backend.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "common/testutil.h"
#include "model/make_model.h"
#include "model/reference_forward.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace crescent::model {
namespace {
using ::crescent::testing::TempDir;

double RelError(std::span<const float> out, std::span<const float> ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (double{out[i]} - ref[i]) * (double{out[i]} - ref[i]);
    den += double{ref[i]} * ref[i];
  }
  return std::sqrt(num / den);
}

std::vector<std::vector<float>> Reference(const std::string& dir, const std::vector<int32_t>& p) {
  auto config = LoadModelConfig(dir);
  auto ckpt = Checkpoint::Open(dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  auto weights = BindWeights(**ckpt, *config);
  EXPECT_TRUE(weights.ok()) << weights.status().ToString();
  return ReferenceForward(*config, *weights, p).value();
}

std::vector<int32_t> Iota(int32_t n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

TEST(BackendTest, FixtureFastPathMatchesReference) {
  for (const char* m : {"tiny-qwen3", "tiny-qwen2", "tiny-llama3"}) {
    const std::string dir = std::string("tests/data/models/") + m;
    std::vector<int32_t> prompt;
    for (int i = 0; i < 20; ++i) prompt.push_back((i * 37 + 11) % 500);
    auto ref = Reference(dir, prompt);
    auto backend = LoadModel(dir, {.num_threads = 2, .num_kv_blocks = 8});
    ASSERT_TRUE(backend.ok());
    std::vector<int32_t> table = Iota(8);
    ForwardOutput out;
    ASSERT_TRUE((*backend)->Forward({{{prompt, 0, table, LogitsMode::kAll}}}, &out).ok());
    for (size_t p = 0; p < prompt.size(); ++p) {
      EXPECT_LT(RelError(out.Row(p), ref[p]), 1e-5) << m << " position " << p;
    }
  }
}

// Odd shapes, every dtype, biases everywhere, linear RoPE: the fast path
// (GEMV for decode-sized batches, sgemm for the 40-token prompt) against
// the scalar reference.
TEST(BackendTest, RandomCheckpointsOfOddShapesMatchReference) {
  struct Variant {
    Architecture arch;
    const char* dtype;
  };
  for (Variant v : {Variant{Architecture::kLlama, "f16"}, Variant{Architecture::kQwen2, "f32"},
                    Variant{Architecture::kQwen3, "bf16"}}) {
    TempDir tmp;
    ModelConfig c;
    c.arch = v.arch;
    c.vocab_size = 300;
    c.hidden_size = 80;
    c.intermediate_size = 200;
    c.num_layers = 2;
    c.num_heads = 5;
    c.num_kv_heads = v.arch == Architecture::kQwen2 ? 1 : 5;
    c.head_dim = 24;
    c.attention_bias = v.arch != Architecture::kQwen3;
    c.mlp_bias = v.arch == Architecture::kLlama;
    c.qk_norm = v.arch == Architecture::kQwen3;
    c.rope = {RopeConfig::Type::kLinear, 10000.0, 2.0};
    c.tie_word_embeddings = v.arch != Architecture::kQwen2;
    ASSERT_TRUE(WriteRandomCheckpoint(c, tmp.path(), 3, v.dtype).ok());
    std::vector<int32_t> prompt;
    for (int i = 0; i < 40; ++i) prompt.push_back((i * 53 + 1) % 300);
    auto ref = Reference(tmp.path(), prompt);
    auto backend =
        LoadModel(tmp.path(), {.num_threads = 2, .kv_block_size = 7, .num_kv_blocks = 8});
    ASSERT_TRUE(backend.ok()) << backend.status().ToString();
    std::vector<int32_t> table = {6, 0, 5, 1, 4, 2};
    ForwardOutput out;
    // 30 tokens at once (sgemm), then 10 one at a time (GEMV).
    ASSERT_TRUE((*backend)
                    ->Forward({{{std::span(prompt).first(30), 0, table, LogitsMode::kAll}}}, &out)
                    .ok());
    for (int p = 0; p < 30; ++p) {
      EXPECT_LT(RelError(out.Row(p), ref[p]), 1e-5) << v.dtype << " position " << p;
    }
    for (int p = 30; p < 40; ++p) {
      ASSERT_TRUE((*backend)->Forward({{{std::span(prompt).subspan(p, 1), p, table}}}, &out).ok());
      EXPECT_LT(RelError(out.LastRow(0), ref[p]), 1e-5) << v.dtype << " position " << p;
    }
  }
}

// The KV connector's path: prefill on one instance, move the blocks' bytes
// to another instance under other block ids, decode there.
TEST(BackendTest, KvBlocksMovedBetweenInstancesDecodeIdentically) {
  const std::string dir = "tests/data/models/tiny-qwen3";
  auto a = LoadModel(dir, {.num_threads = 2, .num_kv_blocks = 8});
  auto b = LoadModel(dir, {.num_threads = 1, .num_kv_blocks = 16});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->model_fingerprint(), (*b)->model_fingerprint());
  EXPECT_EQ((*a)->kv_layout(), (*b)->kv_layout());
  const KvBlockLayout& layout = (*a)->kv_layout();
  EXPECT_EQ(layout.BlockBytes(), size_t{3} * 2 * 2 * 16 * 32 * 4);
  EXPECT_EQ(layout.Tag(), "kv1-f32-L3-H2-D32-B16");

  std::vector<int32_t> prompt;
  for (int i = 0; i < 37; ++i) prompt.push_back((i * 31 + 3) % 512);
  std::vector<int32_t> table_a = {4, 0, 7}, table_b = {11, 2, 9};
  ForwardOutput out_a, out_b;
  ASSERT_TRUE((*a)->Forward({{{prompt, 0, table_a}}}, &out_a).ok());
  std::vector<std::byte> bytes(3 * layout.BlockBytes());
  ASSERT_TRUE((*a)->ReadKvBlocks(table_a, bytes).ok());
  ASSERT_TRUE((*b)->WriteKvBlocks(table_b, bytes).ok());
  // Both decode the same next token from position 37 (in the third block).
  const int32_t next[] = {77};
  ASSERT_TRUE((*a)->Forward({{{next, 37, table_a}}}, &out_a).ok());
  ASSERT_TRUE((*b)->Forward({{{next, 37, table_b}}}, &out_b).ok());
  EXPECT_EQ(out_a.logits, out_b.logits);

  // Wrong sizes and ids are refused.
  EXPECT_EQ((*a)->ReadKvBlocks(table_a, std::span(bytes).first(10)).code(),
            StatusCode::kInvalidArgument);
  const int32_t bad[] = {8};
  EXPECT_EQ((*a)->WriteKvBlocks(bad, std::span(bytes).first(layout.BlockBytes())).code(),
            StatusCode::kInvalidArgument);
  // Another model has another fingerprint.
  auto other = LoadModel("tests/data/models/tiny-qwen2", {.num_kv_blocks = 1});
  ASSERT_TRUE(other.ok());
  EXPECT_NE((*other)->model_fingerprint(), (*a)->model_fingerprint());
}

TEST(BackendTest, ForwardRejectsBadBatchesWithoutTouchingTheCache) {
  auto backend = LoadModel("tests/data/models/tiny-llama3", {.num_threads = 1, .num_kv_blocks = 4});
  ASSERT_TRUE(backend.ok());
  ForwardOutput out;
  const std::vector<int32_t> tokens = {1, 2, 3}, one_block = {0}, two = {0, 1};
  const std::vector<int32_t> bad_token = {1, 512};
  auto run = [&](std::vector<SequenceInput> seqs) { return (*backend)->Forward({seqs}, &out); };
  // Positions [15, 18) need 2 blocks of 16.
  Status s = run({{tokens, 15, one_block}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("need 2"), std::string::npos) << s.message();
  s = run({{bad_token, 0, one_block}});
  EXPECT_NE(s.message().find("512"), std::string::npos) << s.message();
  const std::vector<int32_t> out_of_pool = {4};
  EXPECT_EQ(run({{tokens, 0, out_of_pool}}).code(), StatusCode::kInvalidArgument);
  // Two sequences writing the same slots of block 0.
  s = run({{tokens, 0, one_block}, {tokens, 0, one_block}});
  EXPECT_NE(s.message().find("same KV slot"), std::string::npos) << s.message();
  // Sharing a block read-only is fine: the second sequence only reads block 0.
  ASSERT_TRUE(run({{tokens, 0, one_block}}).ok());
  const std::vector<int32_t> next = {9};
  EXPECT_TRUE(run({{next, 3, one_block}, {next, 16, two}}).ok());
}

}  // namespace
}  // namespace crescent::model
