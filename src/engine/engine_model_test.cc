// The engine over the real CPU model runtime and the tiny fixture models in
// tests/data/models (with reference outputs from Hugging Face transformers).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

#include "engine/backend_runner.h"
#include "engine/engine.h"
#include "engine/engine_testutil.h"
#include "model/backend.h"

namespace crescent::engine {
namespace {

struct Case {
  std::vector<int32_t> prompt;
  std::vector<int32_t> greedy;
  std::vector<double> margins;
};

std::vector<Case> LoadCases(const std::string& model) {
  std::ifstream in("tests/data/models/" + model + "/reference.json");
  EXPECT_TRUE(in.good()) << "missing tests/data/models/" << model << "/reference.json";
  std::vector<Case> cases;
  if (!in.good()) return cases;
  nlohmann::json j = nlohmann::json::parse(in);
  for (const auto& c : j["cases"]) {
    cases.push_back({c["prompt"].get<std::vector<int32_t>>(), c["greedy"].get<std::vector<int32_t>>(),
                     c["greedy_margins"].get<std::vector<double>>()});
  }
  return cases;
}

// Greedy steps whose top-1/top-2 margin is this small may flip between
// float32 implementations; compare only up to the first of them.
constexpr double kMarginTolerance = 1e-3;

void ExpectMatchesReference(const std::vector<int32_t>& got, const Case& c, const std::string& what) {
  size_t k = 0;  // tokens before the first near-tie must match exactly
  while (k < c.greedy.size() && c.margins[k] >= kMarginTolerance) ++k;
  ASSERT_GE(got.size(), k) << what;
  for (size_t i = 0; i < k; ++i) ASSERT_EQ(got[i], c.greedy[i]) << what << ": token " << i;
}

std::unique_ptr<EngineCore> MakeCore(model::Backend* backend, std::unique_ptr<ModelRunner>* runner,
                                     EngineOptions o) {
  *runner = MakeBorrowedBackendRunner(backend);
  auto core = EngineCore::Create(o, runner->get());
  EXPECT_TRUE(core.ok()) << core.status().ToString();
  return std::move(core).value();
}

std::unique_ptr<model::Backend> Load(const std::string& name, int block_size, int num_blocks) {
  model::BackendOptions bo;
  bo.num_threads = 2;
  bo.kv_block_size = block_size;
  bo.num_kv_blocks = num_blocks;
  auto b = model::LoadModel("tests/data/models/" + name, bo);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? std::move(b).value() : nullptr;
}

EngineRequest GreedyIgnoreEos(std::string id, std::vector<int32_t> prompt, int n) {
  EngineRequest r = testing::Greedy(std::move(id), std::move(prompt), n);
  r.params.ignore_eos = true;
  return r;
}

class EngineModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(EngineModelTest, EachCaseAloneGivesTheReferenceGreedyTokens) {
  auto backend = Load(GetParam(), 16, 64);
  ASSERT_NE(backend, nullptr);
  std::unique_ptr<ModelRunner> runner;
  EngineOptions o;
  o.max_model_len = 1024;
  auto core = MakeCore(backend.get(), &runner, o);
  const auto cases = LoadCases(GetParam());
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_TRUE(core->AddRequest(GreedyIgnoreEos("c", cases[i].prompt, 24)).ok());
    auto r = testing::RunToCompletion(*core);
    ExpectMatchesReference(r["c"].tokens[0], cases[i], GetParam() + " case " + std::to_string(i));
  }
}

// All cases at once, in small blocks, chunked prefill under a small token
// budget and a KV pool too small to hold them all (preemption): every
// request still gets what it gets alone.
TEST_P(EngineModelTest, ConcurrentChunkedPreemptedRequestsMatchEachAlone) {
  const auto cases = LoadCases(GetParam());
  size_t longest = 0;
  for (const auto& c : cases) longest = std::max(longest, c.prompt.size() + 24);
  auto backend = Load(GetParam(), 4, static_cast<int>((longest + 3) / 4) + 8);
  ASSERT_NE(backend, nullptr);
  std::unique_ptr<ModelRunner> runner;
  EngineOptions o;
  o.max_model_len = static_cast<int>(longest) + 8;
  o.max_num_batched_tokens = 24;
  auto core = MakeCore(backend.get(), &runner, o);
  for (size_t i = 0; i < cases.size(); ++i) {
    // Twice each: the second copy also shares the first's prefix blocks.
    ASSERT_TRUE(core->AddRequest(GreedyIgnoreEos("a" + std::to_string(i), cases[i].prompt, 24)).ok());
    ASSERT_TRUE(core->AddRequest(GreedyIgnoreEos("b" + std::to_string(i), cases[i].prompt, 24)).ok());
  }
  auto r = testing::RunToCompletion(*core);
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string what = GetParam() + " case " + std::to_string(i);
    ExpectMatchesReference(r["a" + std::to_string(i)].tokens[0], cases[i], what);
    EXPECT_EQ(r["a" + std::to_string(i)].tokens[0], r["b" + std::to_string(i)].tokens[0]) << what;
  }
  EXPECT_EQ(core->block_manager().num_free_blocks(), core->block_manager().num_blocks());
  EXPECT_GT(core->Stats().num_preemptions, 0u) << "the KV pool was meant to be too small";
}

TEST_P(EngineModelTest, PrefixCacheHitGivesIdenticalOutput) {
  const auto cases = LoadCases(GetParam());
  const Case& c = cases.back();  // the longest prompt
  auto backend = Load(GetParam(), 4, 256);
  ASSERT_NE(backend, nullptr);
  std::unique_ptr<ModelRunner> runner;
  EngineOptions o;
  o.max_model_len = 1024;
  auto core = MakeCore(backend.get(), &runner, o);
  ASSERT_TRUE(core->AddRequest(GreedyIgnoreEos("first", c.prompt, 24)).ok());
  auto r1 = testing::RunToCompletion(*core);
  ASSERT_TRUE(core->AddRequest(GreedyIgnoreEos("second", c.prompt, 24)).ok());
  auto r2 = testing::RunToCompletion(*core);
  EXPECT_EQ(r2["second"].num_cached_tokens, static_cast<int>((c.prompt.size() - 1) / 4 * 4));
  EXPECT_GT(core->Stats().prefix_cache_hits, 0u);
  EXPECT_EQ(r2["second"].tokens[0], r1["first"].tokens[0]);
  ExpectMatchesReference(r2["second"].tokens[0], c, GetParam());
}

TEST_P(EngineModelTest, ThreadedEngineServesConcurrentClients) {
  const auto cases = LoadCases(GetParam());
  model::BackendOptions bo;
  bo.num_threads = 2;
  bo.kv_block_size = 16;
  bo.num_kv_blocks = 128;
  auto b = model::LoadModel("tests/data/models/" + GetParam(), bo);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EngineOptions o;
  o.max_model_len = 1024;
  auto engine = Engine::Create(o, MakeBackendRunner(std::move(b).value()));
  ASSERT_TRUE(engine.ok()) << engine.status().ToString();
  std::vector<OutputQueue> queues(cases.size());
  for (size_t i = 0; i < cases.size(); ++i)
    ASSERT_TRUE((*engine)->Submit(GreedyIgnoreEos("r" + std::to_string(i), cases[i].prompt, 24),
                                  queues[i].Callback()).ok());
  for (size_t i = 0; i < cases.size(); ++i) {
    std::vector<int32_t> tokens;
    while (auto out = queues[i].Pop()) {
      tokens.insert(tokens.end(), out->new_tokens.begin(), out->new_tokens.end());
      if (out->request_finished) break;
    }
    ExpectMatchesReference(tokens, cases[i], GetParam() + " case " + std::to_string(i));
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, EngineModelTest,
                         ::testing::Values("tiny-qwen3", "tiny-qwen2", "tiny-llama3"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& ch : s) if (ch == '-') ch = '_';
                           return s;
                         });

}  // namespace
}  // namespace crescent::engine
