// What the proxy derives from a client's request: the prefill copy, the
// routing prompt, and OpenAI-shaped errors.
#include "proxy/openai_request.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace crescent::proxy {
namespace {

using nlohmann::json;

TEST(OpenAIRequestTest, PrefillCopyAsksForOneTokenWithoutStreaming) {
  auto p = ParseRequest(Endpoint::kCompletions,
                        R"({"model":"m","prompt":"abc","max_tokens":100,"stream":true,
                            "stream_options":{"include_usage":true},"min_tokens":5,"temperature":0.5})");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->stream);
  EXPECT_EQ(p->max_tokens, 100);
  EXPECT_EQ(p->prompt_text, "abc");
  json j = json::parse(p->prefill_body);
  EXPECT_EQ(j["max_tokens"], 1);
  EXPECT_EQ(j["stream"], false);
  EXPECT_FALSE(j.contains("stream_options"));
  EXPECT_FALSE(j.contains("min_tokens"));
  EXPECT_EQ(j["temperature"], 0.5);  // everything else as sent
  EXPECT_EQ(j["model"], "m");
  EXPECT_FALSE(j.contains("max_completion_tokens"));
}

TEST(OpenAIRequestTest, ChatPromptIsTheMessagesInOrder) {
  auto p = ParseRequest(
      Endpoint::kChatCompletions,
      R"({"messages":[{"role":"system","content":"be brief"},
                      {"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],
          "max_completion_tokens":7})");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->prompt_text, "system\nbe brief\nuser\nhi there\n");
  EXPECT_EQ(p->max_tokens, 7);
  json j = json::parse(p->prefill_body);
  EXPECT_EQ(j["max_completion_tokens"], 1);
  EXPECT_EQ(j["max_tokens"], 1);
}

TEST(OpenAIRequestTest, TokenPromptsAndPromptLists) {
  auto ids = ParseRequest(Endpoint::kCompletions, R"({"prompt":[1,2,3]})");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->prompt_tokens, (std::vector<int32_t>{1, 2, 3}));
  auto nested = ParseRequest(Endpoint::kCompletions, R"({"prompt":[[4,5],[6]]})");
  ASSERT_TRUE(nested.ok());
  EXPECT_EQ(nested->prompt_tokens, (std::vector<int32_t>{4, 5}));
  auto list = ParseRequest(Endpoint::kCompletions, R"({"prompt":["first","second"]})");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->prompt_text, "first");
}

TEST(OpenAIRequestTest, NonObjectBodiesAreRejected) {
  for (const char* bad : {"", "nope", "[1,2]", "\"text\""}) {
    auto p = ParseRequest(Endpoint::kCompletions, bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  }
}

TEST(OpenAIRequestTest, ErrorsHaveOpenAIShape) {
  json e = json::parse(ErrorJson(503, "no decode instance"));
  EXPECT_EQ(e["error"]["message"], "no decode instance");
  EXPECT_EQ(e["error"]["code"], 503);
  EXPECT_EQ(e["error"]["type"], "ServiceUnavailableError");
  EXPECT_TRUE(e["error"]["param"].is_null());
  std::string events = StreamErrorEvents(502, "gone");
  EXPECT_EQ(events.rfind("data: {\"error\"", 0), 0u);
  EXPECT_TRUE(events.ends_with("\n\ndata: [DONE]\n\n"));
  EXPECT_EQ(HttpStatusOf(UnavailableError("x")), 503);
  EXPECT_EQ(HttpStatusOf(DeadlineExceededError("x")), 504);
  EXPECT_EQ(HttpStatusOf(AlreadyExistsError("x")), 409);
}

}  // namespace
}  // namespace crescent::proxy
