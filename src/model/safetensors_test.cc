// Checkpoint loading: single and sharded files, and the errors a user sees
// for broken checkpoints (each names the tensor and the expected shape).
#include "model/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "common/config.h"
#include "common/testutil.h"
#include "model/backend.h"

namespace crescent::model {
namespace {
using ::crescent::testing::TempDir;

namespace fs = std::filesystem;
constexpr const char* kFixture = "tests/data/models/tiny-qwen3";

// Rewrites the fixture's tensors into `dir` (config.json copied), letting
// `edit` drop (return false) or reshape tensors on the way.
void CopyFixture(
    const std::string& dir,
    const std::function<bool(TensorSpec&)>& edit = [](TensorSpec&) { return true; }) {
  auto ckpt = Checkpoint::Open(kFixture);
  ASSERT_TRUE(ckpt.ok());
  std::vector<TensorSpec> specs;
  std::vector<const TensorView*> src;
  for (const auto& [name, t] : (*ckpt)->tensors()) {
    TensorSpec s{name, t.dtype, t.shape};
    if (!edit(s)) continue;
    specs.push_back(s);
    src.push_back(&t);
  }
  ASSERT_TRUE(
      WriteSafetensors(dir + "/model.safetensors", specs, [&](size_t i, std::span<char> buf) {
        std::memcpy(buf.data(), src[i]->data, std::min(buf.size(), src[i]->bytes));
      }).ok());
  fs::copy_file(std::string(kFixture) + "/config.json", dir + "/config.json");
}

ForwardOutput RunPrompt(const std::string& dir) {
  auto backend = LoadModel(dir, {.num_threads = 1, .num_kv_blocks = 4});
  EXPECT_TRUE(backend.ok()) << backend.status().ToString();
  std::vector<int32_t> prompt = {5, 17, 300, 42, 7}, table = {3, 1};
  ForwardOutput out;
  EXPECT_TRUE((*backend)->Forward({{{prompt, 0, table, LogitsMode::kAll}}}, &out).ok());
  return out;
}

TEST(SafetensorsTest, IndexesFixtureTensors) {
  auto ckpt = Checkpoint::Open(kFixture);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  auto embed = (*ckpt)->Find("model.embed_tokens.weight");
  ASSERT_TRUE(embed.ok());
  EXPECT_EQ((*embed)->dtype, DType::kBF16);
  EXPECT_EQ((*embed)->shape, (std::vector<int64_t>{512, 64}));
  EXPECT_EQ((*embed)->bytes, 512u * 64 * 2);
  EXPECT_FALSE((*ckpt)->Has("lm_head.weight"));  // tied
}

TEST(SafetensorsTest, ShardedCheckpointGivesSameLogits) {
  TempDir tmp;
  auto ckpt = Checkpoint::Open(kFixture);
  ASSERT_TRUE(ckpt.ok());
  // Two shards: layers in one, the rest in the other, plus the index.
  std::vector<TensorSpec> shard[2];
  std::vector<const TensorView*> src[2];
  std::string index = "{\"metadata\": {}, \"weight_map\": {";
  bool first = true;
  for (const auto& [name, t] : (*ckpt)->tensors()) {
    const int s = name.find("layers") != std::string::npos ? 0 : 1;
    shard[s].push_back({name, t.dtype, t.shape});
    src[s].push_back(&t);
    index += std::string(first ? "" : ", ") + "\"" + name + "\": \"model-0000" +
             std::to_string(s + 1) + "-of-00002.safetensors\"";
    first = false;
  }
  index += "}}";
  for (int s = 0; s < 2; ++s) {
    ASSERT_TRUE(WriteSafetensors(
                    tmp.path() + "/model-0000" + std::to_string(s + 1) + "-of-00002.safetensors",
                    shard[s],
                    [&](size_t i, std::span<char> buf) {
                      std::memcpy(buf.data(), src[s][i]->data, buf.size());
                    })
                    .ok());
  }
  std::ofstream(tmp.path() + "/model.safetensors.index.json") << index;
  fs::copy_file(std::string(kFixture) + "/config.json", tmp.path() + "/config.json");
  ForwardOutput sharded = RunPrompt(tmp.path());
  ForwardOutput single = RunPrompt(kFixture);
  ASSERT_EQ(sharded.logits.size(), single.logits.size());
  EXPECT_EQ(sharded.logits, single.logits);
}

TEST(SafetensorsTest, MissingTensorNamesItAndItsShape) {
  TempDir tmp;
  CopyFixture(tmp.path(),
              [](TensorSpec& s) { return s.name != "model.layers.1.self_attn.k_proj.weight"; });
  auto backend = LoadModel(tmp.path());
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), StatusCode::kNotFound);
  EXPECT_NE(backend.status().message().find("model.layers.1.self_attn.k_proj.weight"),
            std::string::npos);
  EXPECT_NE(backend.status().message().find("[64, 64]"), std::string::npos)
      << backend.status().message();
}

TEST(SafetensorsTest, MisShapedTensorNamesExpectedAndFound) {
  TempDir tmp;
  CopyFixture(tmp.path(), [](TensorSpec& s) {
    if (s.name == "model.layers.2.mlp.up_proj.weight") s.shape = {80, 64};  // expected [160, 64]
    return true;
  });
  auto backend = LoadModel(tmp.path());
  ASSERT_FALSE(backend.ok());
  const std::string& msg = backend.status().message();
  EXPECT_NE(msg.find("model.layers.2.mlp.up_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[80, 64]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected [160, 64]"), std::string::npos) << msg;
}

TEST(SafetensorsTest, TruncatedFileIsDataLossNamingATensor) {
  TempDir tmp;
  const std::string path = std::string(kFixture) + "/model.safetensors";
  auto bytes = ReadFile(path);
  ASSERT_TRUE(bytes.ok());
  std::ofstream(tmp.path() + "/model.safetensors", std::ios::binary)
      .write(bytes->data(), static_cast<std::streamsize>(bytes->size() - 1000));
  fs::copy_file(std::string(kFixture) + "/config.json", tmp.path() + "/config.json");
  auto backend = LoadModel(tmp.path());
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(backend.status().message().find("truncated"), std::string::npos);
  EXPECT_NE(backend.status().message().find("tensor "), std::string::npos);

  // A header length past the end of the file.
  std::ofstream(tmp.path() + "/model.safetensors", std::ios::binary)
      .write("\xff\xff\xff\0\0\0\0\0{}", 10);
  backend = LoadModel(tmp.path());
  EXPECT_EQ(backend.status().code(), StatusCode::kDataLoss);
}

TEST(SafetensorsTest, MissingCheckpointAndUnknownArchitecture) {
  TempDir tmp;
  fs::copy_file(std::string(kFixture) + "/config.json", tmp.path() + "/config.json");
  auto none = LoadModel(tmp.path());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("model.safetensors"), std::string::npos);

  std::ofstream(tmp.path() + "/config.json") << R"({"architectures": ["GPT2LMHeadModel"]})";
  auto arch = LoadModel(tmp.path());
  EXPECT_EQ(arch.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(arch.status().message().find("GPT2LMHeadModel"), std::string::npos);
}

}  // namespace
}  // namespace crescent::model
