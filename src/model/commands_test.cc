// `crescent make-model` and `crescent generate` as a user runs them.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/testutil.h"

namespace crescent {
namespace {
using ::crescent::testing::CrescentBin;
using ::crescent::testing::Subprocess;
using ::crescent::testing::TempDir;

namespace fs = std::filesystem;

std::string RunCrescent(std::vector<std::string> argv, int* code) {
  Subprocess p(std::move(argv));
  *code = p.Wait(std::chrono::seconds(60));
  if (*code != 0) p.DumpLog();
  return p.Log();
}

TEST(CommandsTest, GenerateReproducesTransformersGreedy) {
  std::ifstream in("tests/data/models/tiny-llama3/reference.json");
  auto ref = nlohmann::json::parse(in)["cases"][1];  // 9-token prompt, margins > 0.2
  std::string ids;
  for (int id : ref["prompt"]) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  TempDir tmp;
  int code = 0;
  std::string log = RunCrescent(
      {CrescentBin(), "generate", "--model", "tests/data/models/tiny-llama3", "--prompt-ids", ids,
       "--max-tokens", "8", "--ignore-eos", "--dump-logits", tmp.path() + "/logits.json"},
      &code);
  ASSERT_EQ(code, 0) << log;
  std::string expected;
  for (int i = 0; i < 8; ++i) {
    expected += (i ? "," : "") + std::to_string(ref["greedy"][i].get<int>());
  }
  EXPECT_NE(log.find(expected + "\n"), std::string::npos) << log;
  std::ifstream dump(tmp.path() + "/logits.json");
  auto j = nlohmann::json::parse(dump);
  ASSERT_EQ(j["logits"].size(), 8u);
  EXPECT_EQ(j["logits"][0].size(), 512u);
  EXPECT_EQ(j["tokens"][0], ref["greedy"][0]);
}

TEST(CommandsTest, MakeModelWritesALoadableCheckpointWithTokenizer) {
  TempDir tmp;
  // A stand-in tokenizer directory (the real files come from scripts/setup).
  fs::create_directories(tmp.path() + "/tok");
  std::ofstream(tmp.path() + "/tok/tokenizer.json") << "{}";
  std::ofstream(tmp.path() + "/tok/tokenizer_config.json") << "{}";
  const std::string out = tmp.path() + "/tiny";
  int code = 0;
  std::string log = RunCrescent({CrescentBin(), "make-model", "--shape", "tiny", "--out", out,
                                 "--tokenizer-dir", tmp.path() + "/tok"},
                                &code);
  ASSERT_EQ(code, 0) << log;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json", "generation_config.json"}) {
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  }
  log = RunCrescent({CrescentBin(), "generate", "--model", out, "--prompt-ids", "151643,9707,11",
                     "--max-tokens", "3", "--ignore-eos"},
                    &code);
  ASSERT_EQ(code, 0) << log;
  EXPECT_NE(log.find("Qwen3ForCausalLM"), std::string::npos) << log;

  log = RunCrescent({CrescentBin(), "make-model", "--shape", "gpt-5", "--out", out}, &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(log.find("qwen3-0.6b"), std::string::npos) << log;  // lists the known shapes
  log = RunCrescent({CrescentBin(), "generate", "--model", out, "--prompt-ids", "1,x"}, &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(log.find("\"x\""), std::string::npos) << log;
}

}  // namespace
}  // namespace crescent
