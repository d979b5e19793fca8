// Scheduler behaviour, driven through EngineCore with the fake model (which
// really reads its paged KV cache, so wrong bookkeeping changes outputs).
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include "engine/engine_testutil.h"

namespace crescent::engine {
namespace {

using testing::Greedy;
using testing::Prompt;
using testing::ReferenceGreedy;
using testing::RunToCompletion;

struct Rig {
  explicit Rig(EngineOptions opts = {}, FakeModelOptions mopts = {}) : model(mopts) {
    if (opts.max_model_len > mopts.num_blocks * mopts.block_size)
      opts.max_model_len = mopts.num_blocks * mopts.block_size;
    auto c = EngineCore::Create(opts, &model);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    core = std::move(c).value();
  }
  FakeModelRunner model;
  std::unique_ptr<EngineCore> core;
};

TEST(SchedulerTest, GreedyOutputMatchesTheUncachedReference) {
  Rig s;
  ASSERT_TRUE(s.core->AddRequest(Greedy("a", Prompt(9, 1), 12)).ok());
  auto r = RunToCompletion(*s.core);
  EXPECT_EQ(r["a"].tokens[0], ReferenceGreedy(s.model, Prompt(9, 1), 12));
  EXPECT_EQ(r["a"].finish[0], FinishReason::kLength);
  EXPECT_TRUE(r["a"].request_finished);
  EXPECT_EQ(s.core->block_manager().num_free_blocks(), s.core->block_manager().num_blocks());
}

TEST(SchedulerTest, TokenBudgetIsRespectedAndLongPromptsAreChunked) {
  EngineOptions o;
  o.max_num_batched_tokens = 16;
  FakeModelOptions m;
  m.num_blocks = 200;
  Rig s(o, m);
  for (int i = 0; i < 6; ++i)
    ASSERT_TRUE(s.core->AddRequest(Greedy("r" + std::to_string(i), Prompt(5 + 11 * i, i), 8)).ok());
  std::map<std::string, testing::Collected> results;
  bool saw_mixed = false;
  while (s.core->HasUnfinishedRequests()) {
    auto outs = s.core->Step();
    testing::Accumulate(&results, outs);
    const auto& step = s.core->last_step();
    EXPECT_LE(step.num_tokens, 16);
    // A step that decodes some sequences and prefills another.
    if (step.num_prefill_seqs > 0 && step.num_seqs > step.num_prefill_seqs) saw_mixed = true;
  }
  EXPECT_LE(s.model.max_tokens_per_call(), 16);
  EXPECT_TRUE(saw_mixed) << "chunked prefill never ran beside decodes";
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(results["r" + std::to_string(i)].tokens[0], ReferenceGreedy(s.model, Prompt(5 + 11 * i, i), 8))
        << "request " << i;
  }
}

TEST(SchedulerTest, DecodesKeepRunningWhileALongPromptPrefills) {
  EngineOptions o;
  o.max_num_batched_tokens = 8;
  FakeModelOptions m;
  m.num_blocks = 100;
  Rig s(o, m);
  ASSERT_TRUE(s.core->AddRequest(Greedy("short", Prompt(3, 1), 30)).ok());
  s.core->Step();  // short's prefill
  ASSERT_TRUE(s.core->AddRequest(Greedy("long", Prompt(60, 2), 2)).ok());
  // While "long" prefills in chunks of 7, "short" gets one token per step.
  for (int i = 0; i < 8; ++i) {
    auto outs = s.core->Step();
    bool short_got_token = false;
    for (auto& o : outs) short_got_token |= o.request_id == "short" && o.new_tokens.size() == 1;
    EXPECT_TRUE(short_got_token) << "step " << i;
  }
  RunToCompletion(*s.core);
}

TEST(SchedulerTest, NewRequestsJoinTheRunningBatch) {
  Rig s;
  ASSERT_TRUE(s.core->AddRequest(Greedy("a", Prompt(4, 1), 20)).ok());
  s.core->Step();
  s.core->Step();
  ASSERT_TRUE(s.core->AddRequest(Greedy("b", Prompt(4, 2), 5)).ok());
  auto first = s.core->Step();
  EXPECT_EQ(s.core->last_step().num_seqs, 2);
  std::map<std::string, testing::Collected> r;
  testing::Accumulate(&r, first);
  while (s.core->HasUnfinishedRequests()) {
    auto outs = s.core->Step();
    testing::Accumulate(&r, outs);
  }
  EXPECT_EQ(r["b"].tokens[0], ReferenceGreedy(s.model, Prompt(4, 2), 5));
}

TEST(SchedulerTest, MaxNumSeqsCapsTheBatch) {
  EngineOptions o;
  o.max_num_seqs = 3;
  Rig s(o);
  for (int i = 0; i < 7; ++i)
    ASSERT_TRUE(s.core->AddRequest(Greedy("r" + std::to_string(i), Prompt(3, i), 4)).ok());
  while (s.core->HasUnfinishedRequests()) {
    s.core->Step();
    EXPECT_LE(s.core->last_step().num_seqs, 3);
    EXPECT_LE(s.core->Stats().num_running, 3);
  }
}

TEST(SchedulerTest, PreemptionByRecomputeGivesTheSameGreedyOutput) {
  // 16 blocks of 4 tokens = 64 slots; 4 sequences of 6 + 24 tokens need 32
  // slots each, so they cannot all stay resident.
  EngineOptions o;
  FakeModelOptions m;
  m.num_blocks = 16;
  Rig s(o, m);
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(s.core->AddRequest(Greedy("r" + std::to_string(i), Prompt(6, 10 + i), 24)).ok());
  auto r = RunToCompletion(*s.core);
  EXPECT_GT(s.core->Stats().num_preemptions, 0u);
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(r["r" + std::to_string(i)].tokens[0], ReferenceGreedy(s.model, Prompt(6, 10 + i), 24));
  EXPECT_EQ(s.core->block_manager().num_free_blocks(), 16) << "blocks leaked after preemption";
}

TEST(SchedulerTest, AbortFreesBlocksWhereverTheRequestIs) {
  FakeModelOptions m;
  m.num_blocks = 12;
  Rig s({}, m);
  ASSERT_TRUE(s.core->AddRequest(Greedy("running", Prompt(10, 1), 30)).ok());
  ASSERT_TRUE(s.core->AddRequest(Greedy("waiting", Prompt(30, 2), 10)).ok());
  s.core->Step();
  s.core->Step();
  EXPECT_LT(s.core->block_manager().num_free_blocks(), 12);
  auto outs = s.core->Abort("running");
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].finish, FinishReason::kAbort);
  EXPECT_TRUE(outs[0].request_finished);
  outs = s.core->Abort("waiting");
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_TRUE(s.core->Abort("waiting").empty()) << "already gone";
  EXPECT_FALSE(s.core->HasUnfinishedRequests());
  EXPECT_EQ(s.core->block_manager().num_free_blocks(), 12);
  EXPECT_TRUE(s.core->block_manager().CheckInvariants().ok());
}

TEST(SchedulerTest, PrefixCacheHitGivesIdenticalOutputAndSkipsCompute) {
  Rig s;
  const auto prompt = Prompt(23, 5);
  ASSERT_TRUE(s.core->AddRequest(Greedy("first", prompt, 6)).ok());
  auto r1 = RunToCompletion(*s.core);
  const int64_t computed_before = s.model.tokens_computed();
  ASSERT_TRUE(s.core->AddRequest(Greedy("second", prompt, 6)).ok());
  auto r2 = RunToCompletion(*s.core);
  EXPECT_EQ(r2["second"].tokens[0], r1["first"].tokens[0]);
  EXPECT_EQ(r2["second"].num_cached_tokens, 20);  // 5 full blocks of 4
  EXPECT_EQ(s.model.tokens_computed() - computed_before, 3 + 5);  // rest of prompt + decodes
  auto st = s.core->Stats();
  EXPECT_EQ(st.prefix_cache_queries, 46u);
  EXPECT_EQ(st.prefix_cache_hits, 20u);
  // A prompt sharing only the first 10 tokens hits 2 blocks.
  auto other = prompt;
  other[10] = (other[10] + 1) % 64;
  ASSERT_TRUE(s.core->AddRequest(Greedy("third", other, 4)).ok());
  auto r3 = RunToCompletion(*s.core);
  EXPECT_EQ(r3["third"].num_cached_tokens, 8);
  EXPECT_EQ(r3["third"].tokens[0], ReferenceGreedy(s.model, other, 4));
}

TEST(SchedulerTest, FullyCachedPromptStillComputesItsLastToken) {
  Rig s;
  const auto prompt = Prompt(16, 3);  // exactly 4 blocks
  ASSERT_TRUE(s.core->AddRequest(Greedy("a", prompt, 3)).ok());
  auto r1 = RunToCompletion(*s.core);
  ASSERT_TRUE(s.core->AddRequest(Greedy("b", prompt, 3)).ok());
  auto r2 = RunToCompletion(*s.core);
  EXPECT_EQ(r2["b"].num_cached_tokens, 12);
  EXPECT_EQ(r2["b"].tokens[0], r1["a"].tokens[0]);
}

TEST(SchedulerTest, PrefixCachingOffComputesEverything) {
  EngineOptions o;
  o.enable_prefix_caching = false;
  Rig s(o);
  const auto prompt = Prompt(20, 3);
  ASSERT_TRUE(s.core->AddRequest(Greedy("a", prompt, 2)).ok());
  RunToCompletion(*s.core);
  ASSERT_TRUE(s.core->AddRequest(Greedy("b", prompt, 2)).ok());
  auto r = RunToCompletion(*s.core);
  EXPECT_EQ(r["b"].num_cached_tokens, 0);
  EXPECT_EQ(s.model.tokens_computed(), 2 * (20 + 1));
}

}  // namespace
}  // namespace crescent::engine
