// The seed walkthrough (SEED-WALKTHROUGH.md) step by step with `crescent`
// in place of each program, on loopback with tcp:
//   1. etcd as the metadata service
//   2. `crescent master --port P`
//   3. 2 prefill (kv_producer) + 2 decode (kv_consumer) instances with the
//      walkthrough's flags and MOONCAKE_CONFIG_PATH=mooncake.json
//   4. mooncake.json with metadata_server etcd://...
//   5. the proxy with --prefill/--decode and ADMIN_API_KEY; one more prefill
//      and one more decode instance join at run time via POST /instances/add
//   6. the client's curl requests
// Checked: every answer is the greedy text a colocated instance gives for
// the same request (streamed and not), the instances added at run time take
// requests, and the KV really went through the store (decode metrics).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/http.h"
#include "common/testutil.h"

namespace crescent {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::CrescentBin;
using testing::EtcdServer;
using testing::FreePort;
using testing::SourceDir;
using testing::Subprocess;
using testing::TempDir;
namespace fs = std::filesystem;

constexpr const char* kAdminKey = "walkthrough-secret";

std::unique_ptr<http::Client> ClientFor(uint16_t port) {
  http::ClientOptions o;
  o.timeout = 120s;
  return std::make_unique<http::Client>("127.0.0.1", port, o);
}

bool WaitHealthy(Subprocess& proc, uint16_t port, std::chrono::seconds timeout = 60s) {
  auto client = ClientFor(port);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = client->Get("/health");
    if (r.ok() && r->status == 200) return true;
    if (!proc.Running()) break;
    std::this_thread::sleep_for(50ms);
  }
  proc.DumpLog();
  return false;
}

json PostJson(uint16_t port, const std::string& path, const json& body, int want = 200,
              http::Headers headers = {}) {
  http::ClientRequest req;
  req.method = http::Method::kPost;
  req.target = path;
  req.body = body.dump();
  req.content_type = "application/json";
  req.headers = std::move(headers);
  auto r = ClientFor(port)->Send(req);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (!r.ok()) return json();
  EXPECT_EQ(r->status, want) << path << " " << r->body;
  return json::parse(r->body, nullptr, false);
}

// The text of a streamed completion, event by event.
std::string StreamedText(uint16_t port, json body) {
  body["stream"] = true;
  http::ClientRequest req;
  req.method = http::Method::kPost;
  req.target = "/v1/completions";
  req.body = body.dump();
  req.content_type = "application/json";
  std::string raw;
  auto r = ClientFor(port)->SendStreaming(req, [&](std::string_view d) {
    raw.append(d);
    return true;
  });
  EXPECT_TRUE(r.ok() && r->status == 200) << raw;
  std::string text;
  std::regex data(R"(data: (\{[^\n]*\}))");
  for (std::sregex_iterator it(raw.begin(), raw.end(), data), end; it != end; ++it) {
    json j = json::parse((*it)[1].str());
    if (!j["choices"].empty()) text += j["choices"][0]["text"].get<std::string>();
  }
  EXPECT_NE(raw.find("data: [DONE]"), std::string::npos) << raw;
  return text;
}

// Sum of a counter or gauge over its label sets in a /metrics page.
double MetricSum(uint16_t port, const std::string& name) {
  auto r = ClientFor(port)->Get("/metrics");
  if (!r.ok()) return -1;
  std::regex re("(^|\n)" + name + R"((\{[^}]*\})? ([0-9.eE+-]+))");
  double sum = 0;
  for (std::sregex_iterator it(r->body.begin(), r->body.end(), re), end; it != end; ++it) {
    sum += std::stod((*it)[3].str());
  }
  return sum;
}

class WalkthroughTest : public ::testing::Test {
 protected:
  struct Instance {
    uint16_t port;
    std::unique_ptr<Subprocess> proc;
  };

  void SetUp() override {
    if (!fs::exists(SourceDir() + "/.cache/tokenizer-qwen3/tokenizer.json")) {
      GTEST_SKIP() << ".cache/tokenizer-qwen3 missing (run scripts/setup)";
    }
    model_ = dir_.path() + "/M";
    Subprocess make({CrescentBin(), "make-model", "--shape", "tiny", "--out", model_,
                     "--tokenizer-dir", SourceDir() + "/.cache/tokenizer-qwen3"});
    ASSERT_EQ(make.Wait(60s), 0) << make.Log();
  }

  // Step 3: `crescent serve` with the walkthrough's flags (KV pool and
  // threads sized for a test machine).
  Instance StartInstance(const char* kv_role) {
    Instance inst{FreePort(), nullptr};
    std::vector<std::string> argv = {
        CrescentBin(), "serve", "--model", model_, "--host", "127.0.0.1", "--port",
        std::to_string(inst.port), "--max-model-len", "10000", "--gpu-memory-utilization", "0.8",
        "--kv-cache-memory-bytes", "64MiB", "--threads", "1"};
    std::map<std::string, std::string> env;
    if (kv_role != nullptr) {
      argv.push_back("--kv-transfer-config");
      argv.push_back(fmt::format(
          R"({{"kv_connector":"MooncakeStoreConnector","kv_role":"{}"}})", kv_role));
      env["MOONCAKE_CONFIG_PATH"] = mooncake_json_;
    }
    inst.proc = std::make_unique<Subprocess>(argv, env);
    return inst;
  }

  TempDir dir_;
  std::string model_;
  std::string mooncake_json_;
};

TEST_F(WalkthroughTest, EtcdMasterTwoPrefillTwoDecodeProxyAdminAndCurl) {
  // 1. The metadata service.
  EtcdServer etcd;
  ASSERT_TRUE(etcd.ok());
  // 2. The store's master.
  uint16_t master_port = FreePort();
  Subprocess master({CrescentBin(), "master", "--port", std::to_string(master_port),
                     "--metrics-port", std::to_string(FreePort())});
  // 4. mooncake.json (segment sizes kept small for a test machine).
  mooncake_json_ = dir_.path() + "/mooncake.json";
  std::ofstream(mooncake_json_) << json{
      {"local_hostname", "127.0.0.1"},
      {"metadata_server", "etcd://" + etcd.endpoint()},
      {"protocol", "tcp"},
      {"device_name", ""},
      {"master_server_address", fmt::format("127.0.0.1:{}", master_port)},
      {"global_segment_size", "64MB"},
      {"local_buffer_size", "16MB"}}.dump();
  ASSERT_TRUE(testing::WaitForPort(master_port, 30s)) << master.Log();

  // 3. Two producers, two consumers, and a plain colocated instance as the
  // reference, all loading at once.
  std::vector<Instance> prefill, decode;
  for (int i = 0; i < 2; ++i) prefill.push_back(StartInstance("kv_producer"));
  for (int i = 0; i < 2; ++i) decode.push_back(StartInstance("kv_consumer"));
  Instance reference = StartInstance(nullptr);
  for (auto* group : {&prefill, &decode}) {
    for (auto& inst : *group) ASSERT_TRUE(WaitHealthy(*inst.proc, inst.port));
  }
  ASSERT_TRUE(WaitHealthy(*reference.proc, reference.port));

  // 5. The proxy, as the walkthrough starts it (localhost names).
  uint16_t proxy_port = FreePort();
  auto local = [](const Instance& i) { return fmt::format("localhost:{}", i.port); };
  Subprocess proxy(
      {CrescentBin(), "proxy", "--model", model_, "--prefill", local(prefill[0]),
       local(prefill[1]), "--decode", local(decode[0]), local(decode[1]), "--port",
       std::to_string(proxy_port), "--scheduling", "round_robin"},
      {{"ADMIN_API_KEY", kAdminKey}});
  ASSERT_TRUE(WaitHealthy(proxy, proxy_port));

  // 6. The walkthrough's curl, as written (sampled: checked for shape).
  json walkthrough_request = {{"model", model_}, {"prompt", "San Francisco is a"},
                              {"max_tokens", 1000}};
  json answer = PostJson(proxy_port, "/v1/completions", walkthrough_request);
  EXPECT_EQ(answer["object"], "text_completion");
  EXPECT_EQ(answer["usage"]["prompt_tokens"], 4);
  EXPECT_GT(answer["usage"]["completion_tokens"].get<int>(), 0);

  // Greedy: every answer through the proxy equals the colocated one.
  std::string long_prompt;
  for (int i = 0; i < 60; ++i) long_prompt += fmt::format("Sentence number {} of a long prompt. ", i);
  std::vector<json> requests;
  for (const std::string& prompt :
       {std::string("San Francisco is a"), long_prompt, long_prompt + " And a different end.",
        std::string("The capital of France is")}) {
    requests.push_back({{"model", model_}, {"prompt", prompt}, {"max_tokens", 24},
                        {"temperature", 0}, {"ignore_eos", true}});
  }
  auto check_all = [&](const char* when) {
    for (const json& req : requests) {
      std::string want =
          PostJson(reference.port, "/v1/completions", req)["choices"][0]["text"].get<std::string>();
      json got = PostJson(proxy_port, "/v1/completions", req);
      EXPECT_EQ(got["choices"][0]["text"], want) << when << ": " << req["prompt"];
      EXPECT_EQ(StreamedText(proxy_port, req), want) << when << " (streamed)";
    }
  };
  check_all("2P2D");

  // The decode instances loaded prompt KV from the store rather than
  // computing all of it (long prompts span whole chunks).
  double loaded = 0;
  for (auto& d : decode) loaded += MetricSum(d.port, "crescent:kv_connector_loaded_tokens_total");
  EXPECT_GT(loaded, 0) << "no decode instance loaded KV from the store";

  // 5 (cont.). Instances join at run time through the admin API.
  Instance prefill3 = StartInstance("kv_producer");
  Instance decode3 = StartInstance("kv_consumer");
  ASSERT_TRUE(WaitHealthy(*prefill3.proc, prefill3.port));
  ASSERT_TRUE(WaitHealthy(*decode3.proc, decode3.port));
  PostJson(proxy_port, "/instances/add", {{"type", "prefill"}, {"instance", local(prefill3)}}, 403,
           {{"X-API-Key", "wrong"}});
  json added = PostJson(proxy_port, "/instances/add",
                        {{"type", "prefill"}, {"instance", local(prefill3)}}, 200,
                        {{"X-API-Key", kAdminKey}});
  EXPECT_EQ(added["type"], "prefill");
  PostJson(proxy_port, "/instances/add", {{"type", "decode"}, {"instance", local(decode3)}}, 200,
           {{"X-API-Key", kAdminKey}});

  auto status = ClientFor(proxy_port)->Get("/status");
  ASSERT_TRUE(status.ok());
  json st = json::parse(status->body);
  EXPECT_EQ(st["prefill_node_count"], 3);
  EXPECT_EQ(st["decode_node_count"], 3);

  check_all("3P3D");  // 8 requests each way: round robin reaches the new ones
  st = json::parse(ClientFor(proxy_port)->Get("/status")->body);
  for (const json& inst : st["instances"]) {
    EXPECT_TRUE(inst["healthy"].get<bool>()) << inst.dump();
    EXPECT_GT(inst["requests_total"].get<int>(), 0) << inst.dump();
    EXPECT_EQ(inst["failures_total"], 0) << inst.dump();
  }
}

}  // namespace
}  // namespace crescent
