#include "server/openai_protocol.h"

#include <gtest/gtest.h>

namespace crescent::server {
namespace {

Json J(const char* text) { return Json::parse(text); }

TEST(OpenAiProtocolTest, CompletionPromptShapes) {
  auto s = ParseCompletionRequest(J(R"({"prompt": "hi"})"));
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->prompts.size(), 1u);
  EXPECT_EQ(*s->prompts[0].text, "hi");
  auto ls = ParseCompletionRequest(J(R"({"prompt": ["a", "b"]})"));
  ASSERT_TRUE(ls.ok());
  EXPECT_EQ(ls->prompts.size(), 2u);
  auto ids = ParseCompletionRequest(J(R"({"prompt": [1, 2, 3]})"));
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->prompts[0].ids, (std::vector<int32_t>{1, 2, 3}));
  auto lids = ParseCompletionRequest(J(R"({"prompt": [[1, 2], [3]]})"));
  ASSERT_TRUE(lids.ok());
  EXPECT_EQ(lids->prompts[1].ids, (std::vector<int32_t>{3}));
  EXPECT_FALSE(ParseCompletionRequest(J(R"({"prompt": [1, "a"]})")).ok());
  EXPECT_FALSE(ParseCompletionRequest(J(R"({"prompt": [-1]})")).ok());
  EXPECT_FALSE(ParseCompletionRequest(J(R"({"prompt": []})")).ok());
  EXPECT_FALSE(ParseCompletionRequest(J(R"({})")).ok());
}

TEST(OpenAiProtocolTest, SamplingFieldsAndDefaults) {
  auto r = ParseCompletionRequest(J(R"({"prompt": [1], "temperature": 0, "top_p": 0.5, "top_k": 4,
      "min_p": 0.1, "presence_penalty": 1, "frequency_penalty": -1, "repetition_penalty": 1.2,
      "seed": 9, "stop": "x", "stop_token_ids": [7], "ignore_eos": true, "n": 3, "logprobs": 2,
      "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true}})"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->params.temperature, 0.0f);
  EXPECT_EQ(r->params.top_k, 4);
  EXPECT_EQ(*r->params.seed, 9u);
  EXPECT_EQ(r->params.stop, (std::vector<std::string>{"x"}));
  EXPECT_EQ(r->params.stop_token_ids, (std::vector<int32_t>{7}));
  EXPECT_EQ(r->params.n, 3);
  EXPECT_EQ(*r->params.logprobs, 2);
  EXPECT_EQ(r->params.max_tokens, 5);
  EXPECT_TRUE(r->max_tokens_given && r->stream && r->include_usage && r->params.ignore_eos);
  auto d = ParseCompletionRequest(J(R"({"prompt": [1], "temperature": null})"));
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->max_tokens_given);
  EXPECT_EQ(d->params.temperature, 1.0f);
}

TEST(OpenAiProtocolTest, WrongTypesNameTheField) {
  for (const char* field : {"temperature", "top_p", "top_k", "seed", "n", "max_tokens", "stream",
                            "ignore_eos", "stop"}) {
    Json body = J(R"({"prompt": [1]})");
    body[field] = Json::object({{"x", 1}});
    auto r = ParseCompletionRequest(body);
    ASSERT_FALSE(r.ok()) << field;
    EXPECT_NE(r.status().message().find(field), std::string::npos) << r.status().message();
  }
  EXPECT_FALSE(ParseCompletionRequest(J(R"({"prompt": [1], "top_k": 1.5})")).ok());
  EXPECT_TRUE(ParseCompletionRequest(J(R"({"prompt": [1], "top_k": 2.0})")).ok());
  EXPECT_FALSE(ParseCompletionRequest(J(R"({"prompt": [1], "echo": true})")).ok());
  EXPECT_FALSE(ParseCompletionRequest(J(R"({"prompt": [1], "stream_options": {"include_usage": true}})")).ok());
  auto bad = ParseJsonBody("{\"prompt\": ");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("malformed JSON"), std::string::npos);
  EXPECT_FALSE(ParseJsonBody("[1]").ok());
}

TEST(OpenAiProtocolTest, ChatFields) {
  auto r = ParseChatRequest(J(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
      {"type": "text", "text": "b"}]}], "tools": [{"type": "function"}], "max_tokens": 3,
      "max_completion_tokens": 4, "logprobs": true, "top_logprobs": 2,
      "chat_template_kwargs": {"enable_thinking": false}})"));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->messages[0]["content"], "a\nb");
  EXPECT_EQ(r->tools.size(), 1u);
  EXPECT_EQ(r->params.max_tokens, 4);
  EXPECT_EQ(*r->params.logprobs, 2);
  EXPECT_EQ(r->template_kwargs["enable_thinking"], false);
  EXPECT_FALSE(ParseChatRequest(J(R"({"messages": []})")).ok());
  EXPECT_FALSE(ParseChatRequest(J(R"({"messages": [{"content": "x"}]})")).ok());
  EXPECT_FALSE(ParseChatRequest(J(R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})")).ok());
}

TEST(OpenAiProtocolTest, ErrorJsonIsOpenAiShaped) {
  Json e = Json::parse(ErrorJson(404, "The model `x` does not exist."));
  EXPECT_EQ(e["error"]["type"], "NotFoundError");
  EXPECT_EQ(e["error"]["code"], 404);
  EXPECT_TRUE(e["error"]["param"].is_null());
  EXPECT_EQ(HttpStatusOf(InvalidArgumentError("x")), 400);
  EXPECT_EQ(HttpStatusOf(NotFoundError("x")), 404);
}

}  // namespace
}  // namespace crescent::server
