// `crescent serve` as a real process on loopback: the fixture models
// through the HTTP API give the model runtime's reference greedy tokens,
// alone and concurrently; prefix-cache hits; client disconnects free
// blocks; errors; flags. Fixture models have no tokenizer, so prompts are
// token ids and outputs are read with "return_token_ids".
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/http.h"
#include "common/testutil.h"

namespace crescent::server {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using crescent::testing::CrescentBin;
using crescent::testing::Subprocess;

// A running `crescent serve`.
struct Serve {
  uint16_t port = 0;
  std::unique_ptr<Subprocess> proc;
  std::unique_ptr<http::Client> client;

  static std::unique_ptr<Serve> Start(const std::string& model, std::vector<std::string> extra = {}) {
    auto s = std::make_unique<Serve>();
    s->port = crescent::testing::FreePort();
    std::vector<std::string> argv = {CrescentBin(), "serve", "--model", model, "--host", "127.0.0.1",
                                     "--port", std::to_string(s->port), "--threads", "2",
                                     "--kv-cache-memory-bytes", "64MiB", "--max-model-len", "1024"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    s->proc = std::make_unique<Subprocess>(argv);
    http::ClientOptions o;
    o.timeout = 60s;
    s->client = std::make_unique<http::Client>("127.0.0.1", s->port, o);
    for (int i = 0; i < 300; ++i) {
      auto r = s->client->Get("/health");
      if (r.ok() && r->status == 200) return s;
      if (!s->proc->Running()) break;
      std::this_thread::sleep_for(50ms);
    }
    s->proc->DumpLog();
    ADD_FAILURE() << "crescent serve did not come up";
    return nullptr;
  }

  http::ClientResponse Post(const std::string& path, const std::string& body, http::Headers headers = {}) {
    http::ClientRequest req;
    req.method = http::Method::kPost;
    req.target = path;
    req.body = body;
    req.content_type = "application/json";
    req.headers = std::move(headers);
    auto r = client->Send(req);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : http::ClientResponse{};
  }
  json PostJson(const std::string& path, const json& body, int want_status = 200) {
    auto r = Post(path, body.dump());
    EXPECT_EQ(r.status, want_status) << r.body;
    return json::parse(r.body, nullptr, false);
  }
  // A gauge or counter of /metrics (first sample of that name).
  double Metric(const std::string& name) {
    auto r = client->Get("/metrics");
    EXPECT_TRUE(r.ok());
    std::regex re("(^|\n)" + std::regex_replace(name, std::regex(R"([{}"=])"), R"(\$&)") +
                  R"((\{[^}]*\})? ([0-9.eE+-]+))");
    std::smatch m;
    if (!std::regex_search(r->body, m, re)) return -1;
    return std::stod(m[3]);
  }
};

struct Case {
  std::vector<int32_t> prompt, greedy;
  std::vector<double> margins;
};

std::vector<Case> LoadCases(const std::string& model) {
  std::ifstream in("tests/data/models/" + model + "/reference.json");
  json j = json::parse(in);
  std::vector<Case> cases;
  for (const auto& c : j["cases"])
    cases.push_back({c["prompt"], c["greedy"], c["greedy_margins"]});
  return cases;
}

json GreedyRequest(const std::vector<int32_t>& prompt, int max_tokens) {
  return {{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0},
          {"ignore_eos", true}, {"return_token_ids", true}};
}

// Greedy steps whose top-1/top-2 margin is below this may flip between
// float implementations: compare only up to the first of them.
void ExpectReference(const std::vector<int32_t>& got, const Case& c, const std::string& what) {
  size_t k = 0;
  while (k < c.greedy.size() && c.margins[k] >= 1e-3) ++k;
  ASSERT_GE(got.size(), k) << what;
  for (size_t i = 0; i < k; ++i) ASSERT_EQ(got[i], c.greedy[i]) << what << ": token " << i;
}

class FixtureModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FixtureModelTest, GreedyTokensMatchReferenceAloneAndConcurrently) {
  auto serve = Serve::Start("tests/data/models/" + GetParam(), {"--served-model-name", GetParam()});
  ASSERT_NE(serve, nullptr);
  const auto cases = LoadCases(GetParam());
  ASSERT_FALSE(cases.empty());
  std::vector<std::vector<int32_t>> alone;
  for (size_t i = 0; i < cases.size(); ++i) {
    json r = serve->PostJson("/v1/completions", GreedyRequest(cases[i].prompt, cases[i].greedy.size()));
    ASSERT_EQ(r["model"], GetParam());
    ASSERT_EQ(r["object"], "text_completion");
    ASSERT_EQ(r["choices"][0]["finish_reason"], "length");
    ASSERT_EQ(r["usage"]["prompt_tokens"], cases[i].prompt.size());
    alone.push_back(r["choices"][0]["token_ids"]);
    ExpectReference(alone.back(), cases[i], fmt::format("case {} alone", i));
  }
  // All at once (joining one running batch): identical to alone.
  std::vector<std::future<json>> futures;
  for (size_t i = 0; i < cases.size(); ++i)
    futures.push_back(std::async(std::launch::async, [&, i] {
      http::Client c("127.0.0.1", serve->port);
      auto r = c.Post("/v1/completions", GreedyRequest(cases[i].prompt, cases[i].greedy.size()).dump());
      return r.ok() ? json::parse(r->body) : json();
    }));
  for (size_t i = 0; i < cases.size(); ++i) {
    json r = futures[i].get();
    EXPECT_EQ(r["choices"][0]["token_ids"].get<std::vector<int32_t>>(), alone[i]) << "case " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, FixtureModelTest,
                         ::testing::Values("tiny-qwen3", "tiny-qwen2", "tiny-llama3"));

class ServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { serve_ = Serve::Start("tests/data/models/tiny-qwen3").release(); }
  static void TearDownTestSuite() {
    delete serve_;
    serve_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(serve_, nullptr); }
  static Serve* serve_;
};
Serve* ServeTest::serve_ = nullptr;

std::vector<int32_t> Tokens(int n, int seed) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = 3 + (i * 7919 + seed * 104729) % 200;
  return t;
}

TEST_F(ServeTest, PrefixCacheHitGivesIdenticalOutputAndShowsInMetrics) {
  const auto prompt = Tokens(100, 1);
  const double hits0 = serve_->Metric("vllm:prefix_cache_hits_total");
  const double queries0 = serve_->Metric("vllm:prefix_cache_queries_total");
  json a = serve_->PostJson("/v1/completions", GreedyRequest(prompt, 12));
  json b = serve_->PostJson("/v1/completions", GreedyRequest(prompt, 12));
  EXPECT_EQ(a["choices"][0]["token_ids"], b["choices"][0]["token_ids"]);
  // 100 tokens: 6 full blocks of 16 are cached after the first request.
  EXPECT_EQ(b["usage"]["prompt_tokens_details"]["cached_tokens"], 96);
  EXPECT_GE(serve_->Metric("vllm:prefix_cache_hits_total") - hits0, 96);
  EXPECT_GE(serve_->Metric("vllm:prefix_cache_queries_total") - queries0, 200);
  EXPECT_GT(serve_->Metric("vllm:prompt_tokens_total"), 0);
  EXPECT_GT(serve_->Metric("vllm:generation_tokens_total"), 0);
  EXPECT_GE(serve_->Metric("vllm:time_to_first_token_seconds_count"), 2);
  EXPECT_GE(serve_->Metric("vllm:e2e_request_latency_seconds_count"), 2);
}

TEST_F(ServeTest, ClientDisconnectAbortsTheRequestAndFreesItsBlocks) {
  const double total = serve_->Metric("crescent:kv_cache_blocks");
  ASSERT_GT(total, 0);
  const double aborted0 = serve_->Metric("vllm:request_success_total{model_name=\"tests/data/models/tiny-qwen3\",finished_reason=\"abort\"}");
  // The client reads the first event and goes away while the request (4
  // samples of up to 900 tokens) is still generating.
  http::StreamClient sc;
  std::promise<Status> done;
  std::promise<void> first;
  std::atomic<bool> got_first{false};
  http::StreamCallbacks cb;
  cb.on_head = [](int status, const http::Headers&) { return status == 200; };
  cb.on_data = [&](std::string_view) {
    if (!got_first.exchange(true)) first.set_value();
    return true;
  };
  cb.on_done = [&](Status s) { done.set_value(s); };
  http::ClientRequest req;
  req.method = http::Method::kPost;
  req.target = "/v1/completions";
  req.content_type = "application/json";
  json body = GreedyRequest(Tokens(40, 2), 900);
  body["stream"] = true;
  body["n"] = 4;
  req.body = body.dump();
  auto handle = sc.Start("127.0.0.1", serve_->port, req, cb);
  ASSERT_EQ(first.get_future().wait_for(30s), std::future_status::ready);
  handle->Cancel();  // closes the connection mid-stream
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(f.get().code(), StatusCode::kCancelled);
  bool freed = false;
  for (int i = 0; i < 200 && !freed; ++i) {
    freed = serve_->Metric("vllm:num_requests_running") == 0 &&
            serve_->Metric("crescent:kv_cache_free_blocks") == total;
    if (!freed) std::this_thread::sleep_for(25ms);
  }
  EXPECT_TRUE(freed) << "blocks still held after the client disconnected";
  EXPECT_EQ(serve_->Metric("vllm:kv_cache_usage_perc"), 0);
  EXPECT_EQ(serve_->Metric("vllm:request_success_total{model_name=\"tests/data/models/tiny-qwen3\",finished_reason=\"abort\"}") - std::max(0.0, aborted0), 1);
}

TEST_F(ServeTest, ErrorsAreOpenAiErrorJsonWithTheRightStatus) {
  auto expect_error = [&](const std::string& path, const std::string& body, int status,
                          const std::vector<std::string>& needles) {
    auto r = serve_->Post(path, body);
    EXPECT_EQ(r.status, status) << body << " -> " << r.body;
    json j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.contains("error")) << r.body;
    EXPECT_EQ(j["error"]["code"], status);
    EXPECT_TRUE(j["error"]["type"].is_string());
    EXPECT_TRUE(j["error"].contains("param"));
    for (const auto& n : needles)
      EXPECT_NE(j["error"]["message"].get<std::string>().find(n), std::string::npos)
          << "'" << n << "' not in: " << j["error"]["message"];
  };
  expect_error("/v1/completions", "{\"prompt\": [1,2", 400, {"malformed JSON"});
  expect_error("/v1/completions", R"({"prompt": [1,2], "temperature": "hot"})", 400, {"temperature"});
  expect_error("/v1/completions", R"({"prompt": [1,2], "max_tokens": "5"})", 400, {"max_tokens"});
  expect_error("/v1/completions", R"({"prompt": {"a": 1}})", 400, {"prompt"});
  expect_error("/v1/completions", R"({"prompt": [1,2], "n": 0})", 400, {"n"});
  expect_error("/v1/completions", json{{"prompt", Tokens(1500, 3)}}.dump(), 400, {"1024", "1500"});
  expect_error("/v1/completions", json{{"prompt", Tokens(1000, 3)}, {"max_tokens", 100}}.dump(), 400,
               {"1024", "1100", "100"});
  expect_error("/v1/completions", R"({"prompt": [1,2], "model": "gpt-4"})", 404, {"gpt-4"});
  expect_error("/v1/completions", R"({"prompt": "text needs a tokenizer"})", 400, {"tokenizer"});
  expect_error("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}]})", 400,
               {"tokenizer"});
  expect_error("/v1/chat/completions", R"({"messages": "hi"})", 400, {"messages"});
  expect_error("/v1/completions", R"({"prompt": [1, 2], "stop_token_ids": 5})", 400, {"stop_token_ids"});
}

TEST_F(ServeTest, RequestIdIsEchoedOrGenerated) {
  auto r = serve_->Post("/v1/completions", GreedyRequest({5, 6, 7}, 2).dump(), {{"X-Request-Id", "abc-123"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("x-request-id").value_or(""), "abc-123");
  EXPECT_EQ(json::parse(r.body)["id"], "cmpl-abc-123");
  auto g = serve_->Post("/v1/completions", GreedyRequest({5, 6, 7}, 2).dump());
  EXPECT_FALSE(g.Header("x-request-id").value_or("").empty());
}

TEST_F(ServeTest, ListPromptsNAndLogprobsAndStreamingUsage) {
  // Two token-id prompts, n=2 each, with seeds: four choices, indices 0..3.
  json req = {{"prompt", {Tokens(10, 4), Tokens(12, 5)}}, {"max_tokens", 5}, {"n", 2},
              {"seed", 7}, {"temperature", 0.8}, {"top_k", 20}, {"top_p", 0.9}, {"min_p", 0.01},
              {"presence_penalty", 0.5}, {"frequency_penalty", 0.2}, {"repetition_penalty", 1.1},
              {"ignore_eos", true}, {"logprobs", 2}, {"return_token_ids", true}};
  json r = serve_->PostJson("/v1/completions", req);
  ASSERT_EQ(r["choices"].size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(r["choices"][i]["index"], i);
    EXPECT_EQ(r["choices"][i]["token_ids"].size(), 5u);
    EXPECT_EQ(r["choices"][i]["logprobs"]["tokens"].size(), 5u);
    EXPECT_EQ(r["choices"][i]["logprobs"]["top_logprobs"][0].size(), 2u);
  }
  EXPECT_EQ(r["usage"]["completion_tokens"], 20);
  EXPECT_EQ(r["usage"]["prompt_tokens"], 10 + 12);  // once per prompt, as vLLM counts
  // Same seed, same tokens.
  json again = serve_->PostJson("/v1/completions", req);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(again["choices"][i]["token_ids"], r["choices"][i]["token_ids"]);

  // Streaming with include_usage: chunks, then a usage chunk, then [DONE].
  json s = GreedyRequest(Tokens(10, 6), 6);
  s["stream"] = true;
  s["stream_options"] = {{"include_usage", true}};
  auto resp = serve_->Post("/v1/completions", s.dump());
  EXPECT_EQ(resp.status, 200);
  EXPECT_NE(resp.Header("content-type").value_or("").find("text/event-stream"), std::string::npos);
  std::vector<json> events;
  size_t pos = 0;
  bool done = false;
  while ((pos = resp.body.find("data: ", pos)) != std::string::npos) {
    size_t end = resp.body.find("\n\n", pos);
    std::string data = resp.body.substr(pos + 6, end - pos - 6);
    pos = end;
    if (data == "[DONE]") {
      done = true;
      break;
    }
    events.push_back(json::parse(data));
  }
  ASSERT_TRUE(done);
  ASSERT_GE(events.size(), 2u);
  std::vector<int32_t> streamed;
  for (size_t i = 0; i + 1 < events.size(); ++i)
    for (int32_t t : events[i]["choices"][0]["token_ids"]) streamed.push_back(t);
  EXPECT_EQ(streamed.size(), 6u);
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(events.back()["choices"].empty());
  EXPECT_EQ(events.back()["usage"]["completion_tokens"], 6);
  json plain = serve_->PostJson("/v1/completions", GreedyRequest(Tokens(10, 6), 6));
  EXPECT_EQ(plain["choices"][0]["token_ids"].get<std::vector<int32_t>>(), streamed);
}

TEST_F(ServeTest, StopTokenIdsModelsHealthAndMetricsNames) {
  json r = serve_->PostJson("/v1/completions", GreedyRequest(Tokens(20, 8), 8));
  const int32_t third = r["choices"][0]["token_ids"][2];
  json stop = GreedyRequest(Tokens(20, 8), 8);
  stop["stop_token_ids"] = {third};
  json s = serve_->PostJson("/v1/completions", stop);
  EXPECT_EQ(s["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(s["choices"][0]["stop_reason"], third);
  json models = json::parse(serve_->client->Get("/v1/models")->body);
  EXPECT_EQ(models["data"][0]["id"], "tests/data/models/tiny-qwen3");
  EXPECT_EQ(models["data"][0]["max_model_len"], 1024);
  EXPECT_EQ(serve_->client->Get("/health")->status, 200);
  const std::string metrics = serve_->client->Get("/metrics")->body;
  for (const char* name :
       {"vllm:num_requests_running{model_name=", "vllm:num_requests_waiting{", "vllm:kv_cache_usage_perc{",
        "vllm:prefix_cache_queries_total{", "vllm:prefix_cache_hits_total{", "vllm:prompt_tokens_total{",
        "vllm:generation_tokens_total{", "vllm:time_to_first_token_seconds_bucket{",
        "vllm:inter_token_latency_seconds_bucket{", "vllm:e2e_request_latency_seconds_bucket{"})
    EXPECT_NE(metrics.find(name), std::string::npos) << name;
}

// Flags that must fail at start-up, with a message naming what is wrong.
int RunServeExpectingFailure(std::vector<std::string> extra, std::string* log) {
  std::vector<std::string> argv = {CrescentBin(), "serve", "--model", "tests/data/models/tiny-qwen3",
                                   "--port", std::to_string(crescent::testing::FreePort()),
                                   "--kv-cache-memory-bytes", "16MiB"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  Subprocess p(argv);
  int code = p.Wait(30s);
  *log = p.Log();
  return code;
}

TEST(ServeFlagsTest, UnsupportedConfigurationsFailClearly) {
  std::string log;
  EXPECT_EQ(RunServeExpectingFailure({"-tp", "2"}, &log), 2);
  EXPECT_NE(log.find("only 1 is supported"), std::string::npos) << log;
  EXPECT_NE(RunServeExpectingFailure({"--kv-transfer-config", R"({"kv_connector":"MooncakeStoreConnector","kv_role":"producer"})"}, &log), 0);
  EXPECT_NE(log.find("kv_role"), std::string::npos) << log;
  EXPECT_NE(RunServeExpectingFailure({"--kv-transfer-config", R"({"kv_role":"kv_both"})"}, &log), 0);
  EXPECT_NE(log.find("kv_connector"), std::string::npos) << log;
  // The connector without store settings (MOONCAKE_CONFIG_PATH unset).
  unsetenv("MOONCAKE_CONFIG_PATH");
  EXPECT_NE(RunServeExpectingFailure({"--kv-transfer-config", R"({"kv_connector":"MooncakeStoreConnector","kv_role":"kv_producer"})"}, &log), 0);
  EXPECT_NE(log.find("MOONCAKE_CONFIG_PATH"), std::string::npos) << log;
  EXPECT_NE(RunServeExpectingFailure({"--device", "cuda"}, &log), 0);
  EXPECT_NE(log.find("--device cuda"), std::string::npos) << log;
  EXPECT_NE(RunServeExpectingFailure({"--max-model-len", "100000"}, &log), 0);
}

// A make-model directory with the real Qwen3 tokenizer: text prompts, chat
// with the model's template, /tokenize and /detokenize.
TEST(ServeTokenizerTest, ChatTextTokenizeAndDetokenize) {
  if (!std::filesystem::exists(".cache/tokenizer-qwen3/tokenizer.json"))
    GTEST_SKIP() << "run scripts/setup for .cache/tokenizer-qwen3";
  crescent::testing::TempDir tmp;
  const std::string dir = tmp.path() + "/model";
  Subprocess make({CrescentBin(), "make-model", "--shape", "tiny", "--out", dir, "--tokenizer-dir",
                   ".cache/tokenizer-qwen3"});
  ASSERT_EQ(make.Wait(60s), 0) << make.Log();
  auto serve = Serve::Start(dir, {"--served-model-name", "qwen", "alias"});
  ASSERT_NE(serve, nullptr);

  json tok = serve->PostJson("/tokenize", {{"prompt", "Hello world"}});
  EXPECT_EQ(tok["tokens"], json({9707, 1879}));
  json detok = serve->PostJson("/detokenize", {{"tokens", {9707, 1879}}});
  EXPECT_EQ(detok["prompt"], "Hello world");

  json msgs = {{{"role", "user"}, {"content", "Hi"}}};
  json chat_tok = serve->PostJson("/tokenize", {{"messages", msgs}, {"chat_template_kwargs", {{"enable_thinking", false}}}});
  // tools and chat_template_kwargs reach the template (Qwen3's template
  // lists the tools, and writes an empty think block without thinking).
  json tools = json::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "description": "Weather of a city", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}}}}])");
  json plain_tok = serve->PostJson("/tokenize", {{"messages", msgs}});
  json tools_tok = serve->PostJson("/tokenize", {{"messages", msgs}, {"tools", tools}});
  EXPECT_GT(tools_tok["count"].get<int>(), plain_tok["count"].get<int>() + 10);
  EXPECT_GT(chat_tok["count"].get<int>(), plain_tok["count"].get<int>());
  json chat = serve->PostJson("/v1/chat/completions",
                              {{"model", "alias"}, {"messages", msgs}, {"max_completion_tokens", 5},
                               {"temperature", 0}, {"ignore_eos", true}, {"logprobs", true}, {"top_logprobs", 3},
                               {"chat_template_kwargs", {{"enable_thinking", false}}}});
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["model"], "qwen");
  EXPECT_EQ(chat["choices"][0]["message"]["role"], "assistant");
  EXPECT_TRUE(chat["choices"][0]["message"]["content"].is_string());
  EXPECT_EQ(chat["choices"][0]["logprobs"]["content"].size(), 5u);
  EXPECT_EQ(chat["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size(), 3u);
  EXPECT_EQ(chat["usage"]["prompt_tokens"], chat_tok["count"]);
  EXPECT_EQ(chat["usage"]["completion_tokens"], 5);

  json text = serve->PostJson("/v1/completions", {{"prompt", "Hello world"}, {"max_tokens", 4},
                                                  {"temperature", 0}, {"ignore_eos", true}});
  EXPECT_EQ(text["usage"]["prompt_tokens"], 2);
  EXPECT_TRUE(text["choices"][0]["text"].is_string());
}

}  // namespace
}  // namespace crescent::server
