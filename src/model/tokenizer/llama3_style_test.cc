// Llama 3's tokenizer.json shape works by data alone: the synthetic
// tests/data/tokenizer/llama3_style files (see make_llama3_style.py) use its
// regex (\p{N}{1,3}), ignore_merges, no normalizer, a TemplateProcessing
// post-processor and added tokens with lstrip/rstrip/single_word.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "model/tokenizer/chat_template.h"
#include "model/tokenizer/tokenizer.h"

namespace crescent {
namespace {

using Ids = std::vector<int32_t>;

const Tokenizer& Llama3Style() {
  static std::unique_ptr<Tokenizer> tok = [] {
    auto t = Tokenizer::Load("tests/data/tokenizer/llama3_style");
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? std::move(t).value() : nullptr;
  }();
  if (!tok) std::abort();
  return *tok;
}

TEST(Llama3StyleTest, IgnoreMergesTakesWholeWords) {
  const Tokenizer& tok = Llama3Style();
  EXPECT_EQ(tok.Encode("Hello world"), (Ids{263, 266}));  // "Ġworld" only exists as a whole word
  EXPECT_EQ(tok.Encode(" wor"), (Ids{264, 265}));         // merged: Ġw + or
}

TEST(Llama3StyleTest, DigitsSplitInGroupsOfThree) {
  // One piece "12345" would merge to [12, 34, 5]; Llama 3's regex gives "123" "45".
  EXPECT_EQ(Llama3Style().Encode("12345"), (Ids{258, 259}));
}

TEST(Llama3StyleTest, PostProcessorAddsBos) {
  const Tokenizer& tok = Llama3Style();
  EXPECT_EQ(tok.Encode("Hello world", /*add_special_tokens=*/true), (Ids{300, 263, 266}));
  EXPECT_EQ(tok.Decode({300, 263, 266}), "<|begin_of_text|>Hello world");
  EXPECT_EQ(tok.Decode({300, 263, 266}, /*skip_special_tokens=*/true), "Hello world");
}

TEST(Llama3StyleTest, AddedTokenFlags) {
  const Tokenizer& tok = Llama3Style();
  EXPECT_EQ(tok.Encode("a <mask> b"), (Ids{97, 303, 98}));  // lstrip + rstrip swallow the spaces
  EXPECT_EQ(tok.Encode("a [X] b"), (Ids{97, 32, 304, 32, 98}));
  EXPECT_EQ(tok.Encode("a[X]"), (Ids{97, 91, 88, 93}));  // single_word: not inside a word
  EXPECT_EQ(tok.Encode("hi<|eot_id|>"), (Ids{104, 105, 301}));
}

TEST(Llama3StyleTest, ConfigAndGenerationConfig) {
  const Tokenizer& tok = Llama3Style();
  EXPECT_EQ(tok.BosTokenId(), 300);
  EXPECT_EQ(tok.EosTokenIds(), (Ids{301, 302}));
  EXPECT_EQ(tok.SpecialTokenIds(), (Ids{300, 301, 302}));
  auto tmpl = ChatTemplate::FromTokenizer(tok);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status().ToString();
  auto text = (*tmpl)->Render(nlohmann::json::array({{{"role", "user"}, {"content", " hi "}}}), nullptr, false, nullptr);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>");
  EXPECT_EQ(tok.Encode(*text).front(), 300);
}

}  // namespace
}  // namespace crescent
