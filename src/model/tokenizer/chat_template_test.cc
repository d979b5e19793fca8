// Chat templates rendered like transformers' apply_chat_template: the Qwen3
// fixture (transformers 5.17) through the real tokenizer files, and the
// Jinja2 reference renders of Qwen3, Qwen2.5 and Llama 3.2 templates.
#include "model/tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/config.h"
#include "model/tokenizer/tokenizer.h"

namespace crescent {
namespace {

using ojson = nlohmann::ordered_json;

ojson Fixture(const std::string& name) {
  auto text = ReadFile("tests/data/tokenizer/" + name);
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return ojson::parse(*text);
}

TEST(ChatTemplateTest, Qwen3MatchesTransformers) {
  auto tok = Tokenizer::Load(".cache/tokenizer-qwen3");
  ASSERT_TRUE(tok.ok()) << tok.status().ToString() << " (run scripts/setup)";
  auto tmpl = ChatTemplate::FromTokenizer(**tok);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status().ToString();
  const ojson cases = Fixture("qwen3_chat.json")["cases"];
  ASSERT_GE(cases.size(), 5u);
  for (const auto& c : cases) {
    ojson kwargs = c["kwargs"];
    const bool agp = kwargs.value("add_generation_prompt", false);
    kwargs.erase("add_generation_prompt");
    auto rendered = (*tmpl)->Render(c["messages"], nullptr, agp, kwargs);
    ASSERT_TRUE(rendered.ok()) << rendered.status().ToString();
    EXPECT_EQ(*rendered, c["rendered"].get<std::string>()) << c["messages"].dump();
    EXPECT_EQ((*tok)->Encode(*rendered), c["ids"].get<std::vector<int32_t>>()) << c["messages"].dump();
  }
}

TEST(ChatTemplateTest, TemplatesMatchJinja2Reference) {
  const ojson cases = Fixture("chat_reference.json")["cases"];
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    auto source = ReadFile("tests/data/tokenizer/templates/" + c["template"].get<std::string>() + ".jinja");
    ASSERT_TRUE(source.ok()) << source.status().ToString();
    auto tmpl = ChatTemplate::Create(*source, c["special_tokens"]);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status().ToString();
    auto rendered = (*tmpl)->Render(c["messages"], c["tools"], c["add_generation_prompt"].get<bool>(), c["kwargs"]);
    ASSERT_TRUE(rendered.ok()) << c["template"] << ": " << rendered.status().ToString();
    EXPECT_EQ(*rendered, c["rendered"].get<std::string>()) << c["template"] << " " << c["messages"].dump();
  }
}

TEST(ChatTemplateTest, RaiseExceptionReachesTheCaller) {
  auto source = ReadFile("tests/data/tokenizer/templates/llama3_2.jinja");
  ASSERT_TRUE(source.ok());
  auto tmpl = ChatTemplate::Create(*source, {{"bos_token", "<|begin_of_text|>"}});
  ASSERT_TRUE(tmpl.ok()) << tmpl.status().ToString();
  const ojson call = {{"function", {{"name", "f"}, {"arguments", ojson::object()}}}};
  const ojson messages = ojson::array({{{"role", "user"}, {"content", "hi"}},
                                       {{"role", "assistant"}, {"tool_calls", ojson::array({call, call})}}});
  auto r = (*tmpl)->Render(messages, nullptr, false, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("only supports single tool-calls"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("line "), std::string::npos);
}

TEST(ChatTemplateTest, ErrorsNameLineAndConstruct) {
  auto bad = ChatTemplate::Create("{% for m in messages %}\n{{ m.content | nosuchfilter }}\n{% endfor %}", {});
  ASSERT_TRUE(bad.ok()) << bad.status().ToString();  // unknown filters fail at render time, like Jinja2's sandbox
  auto r = (*bad)->Render(ojson::array({{{"role", "user"}, {"content", "x"}}}), nullptr, false, nullptr);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("line 2"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("nosuchfilter"), std::string::npos);

  auto unclosed = ChatTemplate::Create("a\n{% if x %}\nb", {});
  ASSERT_FALSE(unclosed.ok());
  EXPECT_NE(unclosed.status().message().find("endif"), std::string::npos) << unclosed.status().ToString();
  auto syntax = ChatTemplate::Create("line1\nline2 {{ a + }}", {});
  ASSERT_FALSE(syntax.ok());
  EXPECT_NE(syntax.status().message().find("line 2"), std::string::npos) << syntax.status().ToString();
}

TEST(ChatTemplateTest, ModelWithoutTemplateIsNotFound) {
  auto tok = Tokenizer::FromJson(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  auto tmpl = ChatTemplate::FromTokenizer(**tok);
  EXPECT_EQ(tmpl.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace crescent
