// Disaggregated prefill/decode with real processes on loopback: `crescent
// master` (with its HTTP metadata service), a producer and a consumer
// `crescent serve --kv-transfer-config ...` reading MOONCAKE_CONFIG_PATH,
// and a plain colocated instance as the reference. Over shared memory and
// over tcp. Faults: the master killed, the producer killed after
// answering, a store too small for any chunk.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <random>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/http.h"
#include "common/testutil.h"

namespace crescent::kvconnector {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using crescent::testing::CrescentBin;
using crescent::testing::FreePort;
using crescent::testing::Subprocess;

std::vector<int32_t> RandomPrompt(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> p(n);
  for (int32_t& t : p) t = static_cast<int32_t>(3 + rng() % 509);
  return p;
}

bool WaitHealthy(http::Client& client, Subprocess& proc, const std::string& path) {
  for (int i = 0; i < 400; ++i) {
    auto r = client.Get(path);
    if (r.ok() && r->status == 200) return true;
    if (!proc.Running()) break;
    std::this_thread::sleep_for(25ms);
  }
  proc.DumpLog();
  return false;
}

struct Serve {
  std::unique_ptr<Subprocess> proc;
  std::unique_ptr<http::Client> client;

  static std::unique_ptr<Serve> Start(const std::string& model, const std::string& kv_config,
                                      const std::string& mooncake_json) {
    auto s = std::make_unique<Serve>();
    const uint16_t port = FreePort();
    std::vector<std::string> argv = {CrescentBin(), "serve", "--model", model, "--host",
                                     "127.0.0.1", "--port", std::to_string(port), "--threads",
                                     "1", "--kv-cache-memory-bytes", "32MiB", "--max-model-len",
                                     "1024", "--block-size", "16"};
    std::map<std::string, std::string> env;
    if (!kv_config.empty()) {
      argv.push_back("--kv-transfer-config");
      argv.push_back(kv_config);
      env["MOONCAKE_CONFIG_PATH"] = mooncake_json;
    }
    s->proc = std::make_unique<Subprocess>(argv, env);
    http::ClientOptions o;
    o.timeout = 60s;
    s->client = std::make_unique<http::Client>("127.0.0.1", port, o);
    if (!WaitHealthy(*s->client, *s->proc, "/health")) return nullptr;
    return s;
  }

  // Greedy completion of token ids.
  std::vector<int32_t> Complete(const std::vector<int32_t>& prompt, int max_tokens) {
    json body = {{"prompt", prompt},        {"max_tokens", max_tokens},
                 {"temperature", 0},        {"ignore_eos", true},
                 {"return_token_ids", true}};
    http::ClientRequest req;
    req.method = http::Method::kPost;
    req.target = "/v1/completions";
    req.body = body.dump();
    req.content_type = "application/json";
    auto r = client->Send(req);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return {};
    EXPECT_EQ(r->status, 200) << r->body;
    json j = json::parse(r->body, nullptr, false);
    if (j.is_discarded() || !j.contains("choices")) return {};
    return j["choices"][0]["token_ids"].get<std::vector<int32_t>>();
  }

  // The sum of a metric's samples over all label values; -1 if absent.
  double Metric(const std::string& name) {
    auto r = client->Get("/metrics");
    if (!r.ok()) return -1;
    std::regex re("(^|\n)" + name + R"((\{[^}]*\})? ([0-9.eE+-]+))");
    double sum = -1;
    for (std::sregex_iterator it(r->body.begin(), r->body.end(), re), end; it != end; ++it)
      sum = (sum < 0 ? 0 : sum) + std::stod((*it)[3]);
    return sum;
  }
};

// Param: tcp_only.
class ConnectorProcessTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    master_port_ = FreePort();
    metadata_port_ = FreePort();
    StartMaster();
    ASSERT_TRUE(master_ != nullptr);
    mooncake_json_ = WriteMooncakeJson("mooncake.json", "32MB");
  }

  void StartMaster() {
    master_ = std::make_unique<Subprocess>(std::vector<std::string>{
        CrescentBin(), "master", "--host", "127.0.0.1", "--port", std::to_string(master_port_),
        "--enable-http-metadata-server", "--http-metadata-server-port",
        std::to_string(metadata_port_), "--metrics-port", std::to_string(FreePort()),
        "--client-ttl", "2"});
    if (!crescent::testing::WaitForPort(master_port_, 10s) ||
        !crescent::testing::WaitForPort(metadata_port_, 10s)) {
      master_->DumpLog();
      master_.reset();
    }
  }

  std::string WriteMooncakeJson(const std::string& name, const std::string& segment) {
    const std::string path = dir_.path() + "/" + name;
    json j = {{"local_hostname", "127.0.0.1"},
              {"metadata_server", fmt::format("http://127.0.0.1:{}/metadata", metadata_port_)},
              {"protocol", "tcp"},
              {"device_name", ""},
              {"master_server_address", fmt::format("127.0.0.1:{}", master_port_)},
              {"global_segment_size", segment},
              {"local_buffer_size", "16MB"}};
    std::ofstream(path) << j.dump(2);
    return path;
  }

  std::string KvConfig(const char* role) const {
    json j = {{"kv_connector", "MooncakeStoreConnector"},
              {"kv_role", role},
              {"kv_connector_extra_config",
               {{"chunk_tokens", 32}, {"tcp_only", GetParam()}, {"load_timeout_ms", 2000}}}};
    return j.dump();
  }

  crescent::testing::TempDir dir_;
  uint16_t master_port_ = 0;
  uint16_t metadata_port_ = 0;
  std::unique_ptr<Subprocess> master_;
  std::string mooncake_json_;
};

TEST_P(ConnectorProcessTest, ConsumerOutputEqualsColocatedForEveryModel) {
  for (const std::string model : {"tiny-qwen3", "tiny-qwen2", "tiny-llama3"}) {
    SCOPED_TRACE(model);
    const std::string dir = "tests/data/models/" + model;
    auto colocated = Serve::Start(dir, "", "");
    auto producer = Serve::Start(dir, KvConfig("kv_producer"), mooncake_json_);
    auto consumer = Serve::Start(dir, KvConfig("kv_consumer"), mooncake_json_);
    ASSERT_TRUE(colocated && producer && consumer);
    double expect_loaded = 0;
    // Longer than a chunk and not a multiple of it, a multiple, a prompt
    // sharing a prefix with the first, one shorter than a block.
    auto first = RandomPrompt(150, 1);
    auto sharing = first;
    sharing.resize(70);
    auto more = RandomPrompt(40, 2);
    sharing.insert(sharing.end(), more.begin(), more.end());
    for (const auto& prompt : {first, RandomPrompt(64, 3), sharing, RandomPrompt(9, 4)}) {
      const auto want = colocated->Complete(prompt, 8);
      ASSERT_EQ(want.size(), 8u);
      EXPECT_EQ(producer->Complete(prompt, 1), std::vector<int32_t>{want[0]});
      EXPECT_EQ(consumer->Complete(prompt, 8), want) << prompt.size() << " tokens";
    }
    // All full blocks but the one with the last token: 144 and 48; of the
    // sharing prompt's 6 blocks, the first 4 are in the consumer's own
    // prefix cache and 2 come from the store; the 9-token prompt has none.
    expect_loaded = 144 + 48 + 32;
    EXPECT_EQ(consumer->Metric("crescent:kv_connector_loaded_tokens_total"), expect_loaded);
    EXPECT_EQ(consumer->Metric("crescent:kv_connector_failures_total"), 0);
    EXPECT_GT(consumer->Metric("crescent:kv_connector_bytes_total"), 0);
    EXPECT_GT(producer->Metric("crescent:kv_connector_saved_tokens_total"), 0);
  }
}

TEST_P(ConnectorProcessTest, MasterKilledMeansComputedLocallyWithoutHanging) {
  const std::string dir = "tests/data/models/tiny-qwen3";
  auto colocated = Serve::Start(dir, "", "");
  auto producer = Serve::Start(dir, KvConfig("kv_producer"), mooncake_json_);
  auto consumer = Serve::Start(dir, KvConfig("kv_consumer"), mooncake_json_);
  ASSERT_TRUE(colocated && producer && consumer);
  const auto prompt = RandomPrompt(120, 11);
  const auto want = colocated->Complete(prompt, 6);
  producer->Complete(prompt, 1);
  master_->Kill();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(consumer->Complete(prompt, 6), want);
  const auto p2 = RandomPrompt(100, 12);
  const auto want2 = colocated->Complete(p2, 6);
  EXPECT_EQ(producer->Complete(p2, 1), std::vector<int32_t>{want2[0]});
  EXPECT_EQ(consumer->Complete(p2, 6), want2);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  EXPECT_GT(consumer->Metric("crescent:kv_connector_failures_total"), 0);
}

TEST_P(ConnectorProcessTest, ProducerKilledAfterAnsweringMeansComputedLocally) {
  const std::string dir = "tests/data/models/tiny-llama3";
  auto colocated = Serve::Start(dir, "", "");
  auto producer = Serve::Start(dir, KvConfig("kv_producer"), mooncake_json_);
  auto consumer = Serve::Start(dir, KvConfig("kv_consumer"), mooncake_json_);
  ASSERT_TRUE(colocated && producer && consumer);
  const auto prompt = RandomPrompt(130, 21);
  const auto want = colocated->Complete(prompt, 6);
  producer->Complete(prompt, 1);
  producer->proc->Kill();  // its segment held the chunks
  EXPECT_EQ(consumer->Complete(prompt, 6), want);
  const auto p2 = RandomPrompt(100, 23);
  EXPECT_EQ(consumer->Complete(p2, 6), colocated->Complete(p2, 6));
}

TEST_P(ConnectorProcessTest, FullStoreMeansComputedLocally) {
  const std::string dir = "tests/data/models/tiny-llama3";
  // Segments too small for any chunk (one 16-token block of this model is
  // 8 KiB of KV): every put fails, nothing is lost.
  const std::string tiny = WriteMooncakeJson("tiny.json", "4KB");
  auto colocated = Serve::Start(dir, "", "");
  auto producer = Serve::Start(dir, KvConfig("kv_producer"), tiny);
  auto consumer = Serve::Start(dir, KvConfig("kv_consumer"), tiny);
  ASSERT_TRUE(colocated && producer && consumer);
  const auto prompt = RandomPrompt(90, 22);
  const auto want = colocated->Complete(prompt, 6);
  EXPECT_EQ(producer->Complete(prompt, 1), std::vector<int32_t>{want[0]});
  EXPECT_GT(producer->Metric("crescent:kv_connector_failures_total"), 0);
  EXPECT_EQ(consumer->Complete(prompt, 6), want);
  EXPECT_EQ(consumer->Metric("crescent:kv_connector_loaded_tokens_total"), 0);
}

INSTANTIATE_TEST_SUITE_P(Transports, ConnectorProcessTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "tcp" : "shm"; });

}  // namespace
}  // namespace crescent::kvconnector
