// Request semantics (stop conditions, n, seeds, logprobs, stop strings, the
// KV connector hooks) through EngineCore, and the threaded Engine API.
#include "engine/engine.h"

#include <gtest/gtest.h>

#include <functional>
#include <mutex>
#include <thread>
#include <utility>

#include "engine/engine_testutil.h"

namespace crescent::engine {
namespace {

using testing::FakeStore;
using testing::Greedy;
using testing::MapConnector;
using testing::Prompt;
using testing::ReferenceGreedy;
using testing::RunToCompletion;

std::unique_ptr<EngineCore> MakeCore(FakeModelRunner* model, EngineOptions o = {}) {
  o.max_model_len = std::min(o.max_model_len, model->num_blocks() * model->block_size());
  auto c = EngineCore::Create(o, model);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return std::move(c).value();
}

TEST(EngineCoreTest, StopTokenEosAndIgnoreEos) {
  FakeModelRunner model({});
  const auto prompt = Prompt(7, 1);
  const auto ref = ReferenceGreedy(model, prompt, 10);
  EngineOptions o;
  o.eos_token_ids = {ref[3]};
  auto core = MakeCore(&model, o);
  ASSERT_TRUE(core->AddRequest(Greedy("eos", prompt, 10)).ok());
  auto ignore = Greedy("ignore", prompt, 10);
  ignore.params.ignore_eos = true;
  ASSERT_TRUE(core->AddRequest(ignore).ok());
  auto stop_id = Greedy("stopid", prompt, 10);
  stop_id.params.ignore_eos = true;
  stop_id.params.stop_token_ids = {ref[5]};
  ASSERT_TRUE(core->AddRequest(stop_id).ok());
  auto min_tokens = Greedy("min", prompt, 10);
  min_tokens.params.min_tokens = 5;  // EOS is masked for 5 tokens: greedy differs there
  ASSERT_TRUE(core->AddRequest(min_tokens).ok());
  auto r = RunToCompletion(*core);

  EXPECT_EQ(r["eos"].tokens[0], std::vector<int32_t>(ref.begin(), ref.begin() + 4));
  EXPECT_EQ(r["eos"].finish[0], FinishReason::kStop);
  EXPECT_TRUE(std::holds_alternative<std::monostate>(r["eos"].stop_reason[0]));
  // ref[3] may occur again later in ref; ignore_eos runs to max_tokens anyway.
  EXPECT_EQ(r["ignore"].tokens[0], ref);
  EXPECT_EQ(r["ignore"].finish[0], FinishReason::kLength);
  const auto& s = r["stopid"];
  EXPECT_EQ(s.finish.at(0), FinishReason::kStop);
  EXPECT_EQ(std::get<int32_t>(s.stop_reason.at(0)), ref[5]);
  EXPECT_LE(s.tokens.at(0).size(), 6u);
  EXPECT_GE(r["min"].tokens[0].size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_NE(r["min"].tokens[0][i], ref[3]);
}

TEST(EngineCoreTest, SeededSamplingIsReproducibleWhateverTheBatch) {
  FakeModelRunner model({});
  auto make = [](std::string id) {
    EngineRequest r;
    r.request_id = std::move(id);
    r.prompt = Prompt(6, 9);
    r.params.temperature = 1.0f;
    r.params.top_p = 0.9f;
    r.params.seed = 77;
    r.params.n = 3;
    r.params.max_tokens = 15;
    return r;
  };
  auto core = MakeCore(&model);
  ASSERT_TRUE(core->AddRequest(make("alone")).ok());
  auto alone = RunToCompletion(*core)["alone"];
  ASSERT_EQ(alone.tokens.size(), 3u);
  EXPECT_NE(alone.tokens[0], alone.tokens[1]) << "n samples use seed + index";
  // Same request in a crowded batch, with other sampled requests around.
  for (int i = 0; i < 5; ++i) {
    EngineRequest other = make("other" + std::to_string(i));
    other.params.seed.reset();
    other.prompt = Prompt(5 + i, i);
    ASSERT_TRUE(core->AddRequest(other).ok());
  }
  ASSERT_TRUE(core->AddRequest(make("crowded")).ok());
  auto crowded = RunToCompletion(*core)["crowded"];
  EXPECT_EQ(crowded.tokens, alone.tokens);
  EXPECT_TRUE(crowded.request_finished);
}

TEST(EngineCoreTest, LogprobsComeWithEveryToken) {
  FakeModelRunner model({});
  auto core = MakeCore(&model);
  auto req = Greedy("lp", Prompt(5, 2), 4);
  req.params.logprobs = 3;
  ASSERT_TRUE(core->AddRequest(req).ok());
  auto r = RunToCompletion(*core)["lp"];
  ASSERT_EQ(r.logprobs[0].size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const auto& lp = r.logprobs[0][i];
    EXPECT_EQ(lp.token, r.tokens[0][i]);
    EXPECT_EQ(lp.rank, 1) << "greedy picks the top token";
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_EQ(lp.top[0].first, lp.token);
    EXPECT_FLOAT_EQ(lp.top[0].second, lp.logprob);
    EXPECT_LT(lp.logprob, 0.0f);
  }
}

// Detokenizer for the fake vocabulary: token t is the letter 'a' + t % 26.
class LetterStream : public TextStream {
 public:
  std::string Append(int32_t token) override { return std::string(1, static_cast<char>('a' + token % 26)); }
};

TEST(EngineCoreTest, StopStringsCutTheText) {
  FakeModelRunner model({});
  const auto prompt = Prompt(8, 4);
  const auto ref = ReferenceGreedy(model, prompt, 12);
  std::string ref_text;
  for (int32_t t : ref) ref_text += static_cast<char>('a' + t % 26);
  EngineOptions o;
  o.detokenizer = [](std::span<const int32_t>, bool) { return std::make_unique<LetterStream>(); };
  auto core = MakeCore(&model, o);
  auto req = Greedy("s", prompt, 12);
  const std::string stop = ref_text.substr(5, 2);
  req.params.stop = {stop};
  ASSERT_TRUE(core->AddRequest(req).ok());
  auto plain = Greedy("plain", prompt, 12);
  ASSERT_TRUE(core->AddRequest(plain).ok());
  auto r = RunToCompletion(*core);
  EXPECT_EQ(r["plain"].text[0], ref_text);
  const size_t at = ref_text.find(stop);
  EXPECT_EQ(r["s"].text[0], ref_text.substr(0, at));
  EXPECT_EQ(r["s"].finish[0], FinishReason::kStop);
  EXPECT_EQ(std::get<std::string>(r["s"].stop_reason[0]), stop);
  EXPECT_EQ(r["s"].tokens[0].size(), at + stop.size());
}

TEST(EngineCoreTest, RejectsRequestsThatCannotRun) {
  FakeModelRunner model({});
  EngineOptions o;
  o.max_model_len = 100;
  auto core = MakeCore(&model, o);
  Status s = core->AddRequest(Greedy("long", Prompt(100, 1), 1));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("100"), std::string::npos);
  s = core->AddRequest(Greedy("max", Prompt(90, 1), 11));
  EXPECT_NE(s.message().find("at most 10"), std::string::npos) << s.message();
  EXPECT_FALSE(core->AddRequest(Greedy("vocab", {64}, 1)).ok());
  EXPECT_FALSE(core->AddRequest(Greedy("empty", {}, 1)).ok());
  ASSERT_TRUE(core->AddRequest(Greedy("dup", {1}, 1)).ok());
  EXPECT_EQ(core->AddRequest(Greedy("dup", {1}, 1)).code(), StatusCode::kAlreadyExists);
  auto stop = Greedy("stop", {1}, 1);
  stop.params.stop = {"x"};
  EXPECT_EQ(core->AddRequest(stop).code(), StatusCode::kFailedPrecondition);
  // The KV pool must hold max_model_len.
  EngineOptions too_long;
  too_long.max_model_len = model.num_blocks() * model.block_size() + 1;
  EXPECT_FALSE(EngineCore::Create(too_long, &model).ok());
}

TEST(EngineCoreTest, KvConnectorLoadsSavedPrefixesAndFailuresRecompute) {
  FakeStore store;
  const auto prompt = Prompt(22, 8);
  // Producer: computes the prompt (max_tokens 1, as the proxy asks) and
  // saves its 5 full blocks.
  FakeModelRunner producer_model({});
  MapConnector producer_conn(&producer_model, &store);
  EngineOptions po;
  po.kv_connector = &producer_conn;
  auto producer = MakeCore(&producer_model, po);
  ASSERT_TRUE(producer->AddRequest(Greedy("p", prompt, 1)).ok());
  RunToCompletion(*producer);
  EXPECT_EQ(producer_conn.prefills, 1);
  EXPECT_EQ(store.size(), 5u);

  // Consumer: a fresh engine and KV cache; loads 20 tokens, computes 2.
  FakeModelRunner consumer_model({});
  MapConnector consumer_conn(&consumer_model, &store);
  EngineOptions co;
  co.kv_connector = &consumer_conn;
  auto consumer = MakeCore(&consumer_model, co);
  ASSERT_TRUE(consumer->AddRequest(Greedy("c", prompt, 6)).ok());
  auto r = RunToCompletion(*consumer);
  EXPECT_EQ(consumer_conn.loaded, 20);
  EXPECT_EQ(r["c"].num_cached_tokens, 20);
  EXPECT_EQ(r["c"].tokens[0], ReferenceGreedy(consumer_model, prompt, 6));
  EXPECT_EQ(consumer_model.tokens_computed(), 2 + 5);
  EXPECT_EQ(consumer->Stats().kv_connector_loaded_tokens, 20u);

  // Loaded blocks are in the local prefix cache now: no second load.
  ASSERT_TRUE(consumer->AddRequest(Greedy("c2", prompt, 2)).ok());
  RunToCompletion(*consumer);
  EXPECT_EQ(consumer_conn.loaded, 20);

  // A failing store: same output, computed locally.
  FakeModelRunner fallback_model({});
  MapConnector failing(&fallback_model, &store);
  failing.fail = true;
  EngineOptions fo;
  fo.kv_connector = &failing;
  auto fallback = MakeCore(&fallback_model, fo);
  ASSERT_TRUE(fallback->AddRequest(Greedy("f", prompt, 6)).ok());
  auto rf = RunToCompletion(*fallback);
  EXPECT_EQ(rf["f"].tokens[0], r["c"].tokens[0]);
  EXPECT_EQ(fallback_model.tokens_computed(), 22 + 5);
  EXPECT_EQ(fallback->Stats().kv_connector_failed_loads, 1u);
}

// ---- The threaded Engine -------------------------------------------------

std::unique_ptr<Engine> MakeEngine(FakeModelOptions m = {}, EngineOptions o = {}) {
  o.max_model_len = std::min(o.max_model_len, m.num_blocks * m.block_size);
  auto e = Engine::Create(o, std::make_unique<FakeModelRunner>(m));
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return std::move(e).value();
}

std::vector<int32_t> Drain(OutputQueue& q, FinishReason* finish = nullptr) {
  std::vector<int32_t> tokens;
  while (auto out = q.Pop()) {
    tokens.insert(tokens.end(), out->new_tokens.begin(), out->new_tokens.end());
    if (out->request_finished) {
      if (finish) *finish = *out->finish;
      return tokens;
    }
  }
  ADD_FAILURE() << "timed out waiting for outputs";
  return tokens;
}

TEST(EngineTest, ConcurrentSubmittersGetTheirOwnGreedyOutputs) {
  FakeModelOptions m;
  m.num_blocks = 40;  // tight: forces preemption under load
  auto engine = MakeEngine(m);
  FakeModelRunner reference(m);
  constexpr int kThreads = 8;
  std::vector<std::vector<int32_t>> got(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      OutputQueue q;
      auto req = Greedy("t" + std::to_string(i), Prompt(3 + i * 3, i), 20);
      ASSERT_TRUE(engine->Submit(req, q.Callback()).ok());
      got[i] = Drain(q);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i)
    EXPECT_EQ(got[i], ReferenceGreedy(reference, Prompt(3 + i * 3, i), 20)) << "thread " << i;
  const EngineStats st = engine->Stats();
  EXPECT_EQ(st.num_running, 0);
  EXPECT_EQ(st.num_free_blocks, st.num_blocks);
  EXPECT_EQ(st.generation_tokens_total, kThreads * 20u);
}

// A connector that holds every last output until the test releases it.
class HoldingConnector : public KvConnector {
 public:
  int MatchTokens(const KvSequenceView&, int) override { return 0; }
  Status LoadKv(const KvSequenceView&, int, int, std::span<const BlockId>) override {
    return OkStatus();
  }
  void OnPrefillDone(const KvSequenceView&, std::span<const BlockId>) override {}
  bool HoldFinish(std::string_view request_id, std::function<void()> release) override {
    std::lock_guard lock(mu);
    held.emplace_back(request_id, std::move(release));
    return true;
  }
  std::mutex mu;
  std::vector<std::pair<std::string, std::function<void()>>> held;
};

TEST(EngineTest, HeldLastOutputsArriveOnlyWhenReleasedWhileOthersRun) {
  HoldingConnector connector;
  EngineOptions o;
  o.kv_connector = &connector;
  auto engine = MakeEngine({}, o);
  OutputQueue held_q, other_q;
  ASSERT_TRUE(engine->Submit(Greedy("held", Prompt(5, 1), 3), held_q.Callback()).ok());
  // Everything but the last output arrives.
  std::vector<int32_t> tokens;
  while (auto out = held_q.Pop(std::chrono::milliseconds(300))) {
    EXPECT_FALSE(out->request_finished);
    tokens.insert(tokens.end(), out->new_tokens.begin(), out->new_tokens.end());
  }
  EXPECT_EQ(tokens.size(), 2u);
  // The engine keeps serving others meanwhile (their last outputs are held
  // too: release them as they come).
  ASSERT_TRUE(engine->Submit(Greedy("other", Prompt(4, 2), 2), other_q.Callback()).ok());
  auto release = [&](const std::string& id) {
    for (int i = 0; i < 200; ++i) {
      {
        std::lock_guard lock(connector.mu);
        for (auto& [held_id, fn] : connector.held)
          if (held_id == id && fn) {
            std::exchange(fn, nullptr)();
            return true;
          }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  };
  ASSERT_TRUE(release("other"));
  EXPECT_EQ(Drain(other_q).size(), 2u);
  ASSERT_TRUE(release("held"));
  auto last = held_q.Pop();
  ASSERT_TRUE(last.has_value());
  EXPECT_TRUE(last->request_finished);
  EXPECT_EQ(last->new_tokens.size(), 1u);
}

TEST(EngineTest, AReleaseAfterTheEngineIsGoneIsHarmless) {
  HoldingConnector connector;
  EngineOptions o;
  o.kv_connector = &connector;
  auto engine = MakeEngine({}, o);
  OutputQueue q;
  ASSERT_TRUE(engine->Submit(Greedy("r", Prompt(5, 1), 1), q.Callback()).ok());
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard lock(connector.mu);
      if (!connector.held.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  engine.reset();  // delivers the held output as it is
  std::lock_guard lock(connector.mu);
  for (auto& [id, fn] : connector.held) fn();
}

TEST(EngineTest, AbortFromAnotherThreadFinishesTheRequest) {
  FakeModelOptions m;
  m.num_blocks = 600;
  EngineOptions o;
  o.max_model_len = 2400;
  auto engine = MakeEngine(m, o);
  OutputQueue q;
  auto req = Greedy("long", Prompt(4, 1), 2000);
  req.params.ignore_eos = true;
  ASSERT_TRUE(engine->Submit(req, q.Callback()).ok());
  ASSERT_TRUE(q.Pop().has_value()) << "no first token";
  engine->Abort("long");
  FinishReason finish{};
  auto tokens = Drain(q, &finish);
  EXPECT_EQ(finish, FinishReason::kAbort);
  EXPECT_LT(tokens.size(), 2000u);
  // Blocks come back; the id can be reused.
  for (int i = 0; i < 100 && engine->Stats().num_free_blocks != 600; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(engine->Stats().num_free_blocks, 600);
  OutputQueue q2;
  ASSERT_TRUE(engine->Submit(Greedy("long", Prompt(4, 1), 3), q2.Callback()).ok());
  EXPECT_EQ(Drain(q2).size(), 3u);
}

TEST(EngineTest, SubmitRefusesInvalidAndDuplicateRequests) {
  auto engine = MakeEngine();
  OutputQueue q;
  EXPECT_FALSE(engine->Submit(Greedy("bad", {}, 1), q.Callback()).ok());
  auto req = Greedy("dup", Prompt(4, 1), 50);
  ASSERT_TRUE(engine->Submit(req, q.Callback()).ok());
  EXPECT_EQ(engine->Submit(req, q.Callback()).code(), StatusCode::kAlreadyExists);
  Drain(q);
}

TEST(EngineTest, DestroyingTheEngineAbortsUnfinishedRequests) {
  OutputQueue q;
  {
    FakeModelOptions m;
    m.num_blocks = 600;
    EngineOptions o;
    o.max_model_len = 2400;
    auto engine = MakeEngine(m, o);
    auto req = Greedy("x", Prompt(4, 1), 2000);
    req.params.ignore_eos = true;
    ASSERT_TRUE(engine->Submit(req, q.Callback()).ok());
    ASSERT_TRUE(q.Pop().has_value());
  }
  FinishReason finish{};
  Drain(q, &finish);
  EXPECT_EQ(finish, FinishReason::kAbort);
}

}  // namespace
}  // namespace crescent::engine
