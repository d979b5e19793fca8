// `crescent tokenize` and `crescent chat-template` as a user runs them.
#include <gtest/gtest.h>

#include "common/testutil.h"

namespace crescent {
namespace {

using testing::CrescentBin;
using testing::Subprocess;

std::string RunCrescent(std::vector<std::string> argv, int* code) {
  argv.insert(argv.begin(), CrescentBin());
  Subprocess p(argv);
  *code = p.Wait();
  return p.Log();
}

TEST(TokenizerCliTest, TokenizePrintsIds) {
  int code = -1;
  std::string out = RunCrescent({"tokenize", "--model", ".cache/tokenizer-qwen3", "--text", "Hello world"}, &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, "9707 1879\n");
}

TEST(TokenizerCliTest, ChatTemplatePrintsPromptAndIds) {
  int code = -1;
  const std::string messages = R"([{"role": "user", "content": "Hello"}])";
  std::string out = RunCrescent({"chat-template", "--model", ".cache/tokenizer-qwen3", "--messages", messages, "--kwargs",
                         R"({"enable_thinking": false})"},
                        &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  out = RunCrescent({"chat-template", "--model", ".cache/tokenizer-qwen3", "--messages", messages, "--ids", "--kwargs",
             R"({"add_generation_prompt": true, "enable_thinking": false})"},
            &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_EQ(out, "151644 872 198 9707 151645 198 151644 77091 198 151667 271 151668 271\n");
}

TEST(TokenizerCliTest, BadInputIsAnErrorWithAHint) {
  int code = -1;
  std::string out = RunCrescent({"chat-template", "--model", ".cache/tokenizer-qwen3", "--messages", "[{"}, &code);
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("--messages is not valid JSON"), std::string::npos) << out;
  out = RunCrescent({"tokenize", "--model", "/nonexistent", "--text", "x"}, &code);
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("tokenizer.json"), std::string::npos) << out;
}

}  // namespace
}  // namespace crescent
