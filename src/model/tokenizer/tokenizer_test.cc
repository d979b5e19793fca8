// Encodings against Hugging Face tokenizers on the real Qwen3 files, decode
// round trips and streaming detokenization.
#include "model/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <atomic>
#include <random>
#include <thread>

#include "common/config.h"
#include "model/tokenizer/detokenizer.h"
#include "model/tokenizer/utf8.h"

namespace crescent {
namespace {

using json = nlohmann::json;
constexpr const char* kQwen3Dir = ".cache/tokenizer-qwen3";

const Tokenizer& Qwen3() {
  static std::unique_ptr<Tokenizer> tok = [] {
    auto t = Tokenizer::Load(kQwen3Dir);
    EXPECT_TRUE(t.ok()) << t.status().ToString() << " (run scripts/setup to fetch the Qwen3 files)";
    return t.ok() ? std::move(t).value() : nullptr;
  }();
  if (!tok) std::abort();
  return *tok;
}

json Fixture(const std::string& name) {
  auto text = ReadFile("tests/data/tokenizer/" + name);
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return json::parse(*text);
}

// Each TEST runs in its own process under ctest and loading the real
// tokenizer costs about a second, so related checks share a TEST.
TEST(TokenizerTest, Qwen3MatchesHuggingFace) {
  const Tokenizer& tok = Qwen3();
  json cases = Fixture("qwen3_encode.json")["cases"];
  ASSERT_GT(cases.size(), 20u);
  for (const auto& c : cases) {
    const std::string text = c["text"];
    EXPECT_EQ(tok.Encode(text), c["ids"].get<std::vector<int32_t>>()) << "text: " << text;
  }
  // Random multi-script strings (NFC, combining marks, emoji, odd spaces)
  // against a second implementation, transformers.js.
  json js_cases = Fixture("qwen3_encode_js.json")["cases"];
  ASSERT_GT(js_cases.size(), 100u);
  for (const auto& c : js_cases) {
    const std::string text = c["text"];
    EXPECT_EQ(tok.Encode(text), c["ids"].get<std::vector<int32_t>>()) << "text: " << text;
  }
  // Decode, with and without special tokens.
  for (const auto& c : Fixture("qwen3_encode.json")["cases"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.Decode(ids), c["decoded"].get<std::string>());
    EXPECT_EQ(tok.Decode(ids, /*skip_special_tokens=*/true), c["decoded_skip_special"].get<std::string>());
  }
  // Special tokens and tokenizer_config.json.
  EXPECT_EQ(tok.TokenToId("<|im_end|>"), 151645);
  EXPECT_EQ(tok.IdToToken(151644), "<|im_start|>");
  EXPECT_EQ(tok.EosTokenIds(), std::vector<int32_t>{151645});
  EXPECT_EQ(tok.PadTokenId(), 151643);
  EXPECT_FALSE(tok.BosTokenId().has_value());
  EXPECT_TRUE(tok.IsSpecial(151643));
  EXPECT_FALSE(tok.IsSpecial(151667));  // <think> is added but not special
  EXPECT_FALSE(tok.AddBosToken());
  EXPECT_NE(tok.ChatTemplateSource().find("enable_thinking"), std::string::npos);
  EXPECT_EQ(tok.VocabSize(), 151669);
  // Qwen adds nothing around the text even with add_special_tokens.
  EXPECT_EQ(tok.Encode("Hello world", true), tok.Encode("Hello world", false));
}

TEST(TokenizerTest, Qwen3RoundTripsAndStreams) {
  const Tokenizer& tok = Qwen3();
  std::mt19937 rng(42);
  // Code points from several scripts, spaces, digits, newlines and emoji.
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x20, 0x7E}, {0xA0, 0x24F}, {0x370, 0x3FF}, {0x400, 0x4FF}, {0x600, 0x6FF},
      {0x3040, 0x30FF}, {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3}, {0x1F300, 0x1F6FF}, {0x0A, 0x0A}};
  for (int iter = 0; iter < 300; ++iter) {
    std::string text;
    const int len = std::uniform_int_distribution<int>(0, 60)(rng);
    for (int i = 0; i < len; ++i) {
      const auto& [lo, hi] = ranges[std::uniform_int_distribution<size_t>(0, ranges.size() - 1)(rng)];
      tokenizer::AppendUtf8(std::uniform_int_distribution<uint32_t>(lo, hi)(rng), &text);
    }
    const auto ids = tok.Encode(text);
    // NFC may change the text; decoding gives the normalized text, which
    // encodes to the same ids.
    const std::string decoded = tok.Decode(ids);
    EXPECT_EQ(tok.Encode(decoded), ids) << text;
    EXPECT_EQ(decoded.empty(), text.empty());
  }
  // Many threads share one Tokenizer (and its word cache) and agree with one thread.
  {
    std::vector<std::string> texts;
    for (const auto& c : Fixture("qwen3_encode.json")["cases"]) texts.push_back(c["text"]);
    std::vector<std::vector<int32_t>> want;
    for (const auto& t : texts) want.push_back(tok.Encode(t));
    std::atomic<int> mismatches{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int round = 0; round < 20; ++round) {
          for (size_t i = 0; i < texts.size(); ++i) {
            const size_t k = (i + static_cast<size_t>(t) * 7 + static_cast<size_t>(round)) % texts.size();
            if (tok.Encode(texts[k]) != want[k]) ++mismatches;
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(mismatches.load(), 0);
  }
  // Invalid UTF-8 neither crashes nor drops bytes.
  const std::string text = "ok \xff\xfe bad \xe4\xb8 cut \xed\xa0\x80 surrogate";
  const auto ids = tok.Encode(text);
  std::string bytes;
  for (int32_t id : ids) bytes += tok.TokenBytes(id);
  EXPECT_EQ(bytes, text);  // every byte is represented
  const std::string decoded = tok.Decode(ids);
  EXPECT_TRUE(tokenizer::IsValidUtf8(decoded));
  EXPECT_NE(decoded.find("\xEF\xBF\xBD"), std::string::npos);
  // Streaming equals Decode and never splits a character.
  for (const auto& c : Fixture("qwen3_encode.json")["cases"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    for (bool skip : {false, true}) {
      Detokenizer detok(tok, skip);
      std::string streamed;
      for (int32_t id : ids) {
        std::string piece = detok.Add(id);
        EXPECT_TRUE(tokenizer::IsValidUtf8(piece)) << c["text"];
        streamed += piece;
      }
      streamed += detok.Finish();
      EXPECT_EQ(streamed, tok.Decode(ids, skip)) << c["text"];
    }
  }
  // " 🇯🇵!" encodes as 11162, 229, 107, ...: tokens that end inside a character.
  const auto flag_ids = tok.Encode(" \xF0\x9F\x87\xAF\xF0\x9F\x87\xB5!");
  ASSERT_EQ(flag_ids[0], 11162);
  Detokenizer detok(tok);
  std::string streamed;
  size_t empty_pieces = 0;
  for (int32_t id : flag_ids) {
    std::string piece = detok.Add(id);
    empty_pieces += piece.empty();
    streamed += piece;
  }
  EXPECT_GT(empty_pieces, 0u);
  EXPECT_EQ(streamed + detok.Finish(), " \xF0\x9F\x87\xAF\xF0\x9F\x87\xB5!");
  // A stream cut inside a character ends in one U+FFFD, like Decode.
  Detokenizer cut(tok);
  std::string out;
  for (int32_t id : tok.Encode("\xe4\xb8")) out += cut.Add(id);
  EXPECT_EQ(out, "");
  EXPECT_EQ(cut.Finish(), "\xEF\xBF\xBD");
}

TEST(TokenizerTest, LoadErrorsNameTheProblem) {
  auto missing = Tokenizer::Load("/nonexistent-model-dir");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("tokenizer.json"), std::string::npos);
  auto bad = Tokenizer::FromJson(R"({"model": {"type": "Unigram", "vocab": []}})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("Unigram"), std::string::npos);
}

}  // namespace
}  // namespace crescent
