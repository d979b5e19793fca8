// Asynchronous KV connector loads in the scheduler (kv_connector.h): a
// sequence whose load is in flight holds its blocks without being scheduled,
// others keep running and are admitted; it joins once the load ends, or
// computes everything when the load failed; an abort while loading frees the
// blocks only when the load is reported. Driven step by step through
// EngineCore over the fake model (whose KV cache the test connector fills).
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <utility>

#include "engine/engine_core.h"
#include "engine/engine_testutil.h"

namespace crescent::engine {
namespace {

using testing::Collected;
using testing::FakeStore;
using testing::MapConnector;
using testing::Greedy;
using testing::Prompt;
using testing::ReferenceGreedy;

std::unique_ptr<EngineCore> MakeCore(FakeModelRunner* model, KvConnector* connector) {
  EngineOptions o;
  o.max_model_len = model->num_blocks() * model->block_size();
  o.kv_connector = connector;
  auto core = EngineCore::Create(o, model);
  EXPECT_TRUE(core.ok()) << core.status().ToString();
  return std::move(core).value();
}

// A store of KV blocks by chained hash, saved from a producer's fake model
// and loaded into a consumer's. Loads are asynchronous: the test ends each
// one (Complete) between steps, as a loader thread would.
class AsyncMapConnector : public MapConnector {
 public:
  using MapConnector::MapConnector;

  Status LoadKv(const KvSequenceView&, int, int, std::span<const BlockId>) override {
    ADD_FAILURE() << "a synchronous load from an asynchronous connector";
    return InternalError("unexpected");
  }
  KvLoadStart StartLoadKv(const KvSequenceView& seq, KvLoadId id, int begin, int end,
                          std::span<const BlockId> blocks) override {
    const int bs = model_->block_size();
    Pending p;
    p.hashes.assign(seq.block_hashes.begin() + begin / bs, seq.block_hashes.begin() + end / bs);
    p.blocks.assign(blocks.begin(), blocks.end());
    pending_[id] = std::move(p);
    last_id = id;
    return KvLoadStart{true, OkStatus()};
  }
  std::vector<KvLoadDone> PollFinishedLoads() override {
    ++polls;
    return std::exchange(done_, {});
  }
  void CancelLoad(KvLoadId id) override {
    cancelled.insert(id);
    if (complete_on_cancel) Complete(id, CancelledError("cancelled"));
  }
  // Ends load `id`: copies the blocks in when `status` is ok.
  void Complete(KvLoadId id, Status status) {
    Pending p = std::move(pending_.at(id));
    pending_.erase(id);
    if (status.ok()) CopyIn(p.hashes, p.blocks);
    done_.push_back({id, std::move(status)});
  }
  int num_pending() const { return static_cast<int>(pending_.size()); }

  KvLoadId last_id = 0;
  std::set<KvLoadId> cancelled;
  bool complete_on_cancel = false;
  int polls = 0;

 private:
  struct Pending {
    std::vector<BlockHash> hashes;
    std::vector<BlockId> blocks;
  };
  std::map<KvLoadId, Pending> pending_;
  std::vector<KvLoadDone> done_;
};

// Fills `store` with the full blocks of `prompt`, computed by a producer.
void Produce(FakeStore* store, const std::vector<int32_t>& prompt) {
  FakeModelRunner model({});
  AsyncMapConnector conn(&model, store);
  auto core = MakeCore(&model, &conn);
  ASSERT_TRUE(core->AddRequest(Greedy("producer", prompt, 1)).ok());
  testing::RunToCompletion(*core);
  ASSERT_EQ(store->size(), prompt.size() / 4);
}

void Step(EngineCore& core, std::map<std::string, Collected>* results) {
  auto outputs = core.Step();
  testing::Accumulate(results, outputs);
  Status st = core.block_manager().CheckInvariants();
  ASSERT_TRUE(st.ok()) << st.ToString();
}

TEST(AsyncKvLoadTest, OthersDecodeAndAreAdmittedWhileALoadIsInFlight) {
  FakeStore store;
  const auto stored = Prompt(22, 8);  // 5 full blocks of 4
  Produce(&store, stored);
  FakeModelRunner model({});
  AsyncMapConnector conn(&model, &store);
  auto core = MakeCore(&model, &conn);
  std::map<std::string, Collected> got;

  ASSERT_TRUE(core->AddRequest(Greedy("a", Prompt(6, 1), 30)).ok());
  Step(*core, &got);  // a's prefill
  ASSERT_TRUE(core->AddRequest(Greedy("b", stored, 6)).ok());
  ASSERT_TRUE(core->AddRequest(Greedy("c", Prompt(5, 2), 10)).ok());
  Step(*core, &got);  // b's load starts; c is admitted behind it
  ASSERT_EQ(conn.num_pending(), 1);
  EXPECT_EQ(core->Stats().num_waiting, 1) << "a loading sequence counts as waiting";
  for (int i = 0; i < 5; ++i) Step(*core, &got);
  // a decoded and c was prefilled and decoded, b computed nothing.
  EXPECT_EQ(got["a"].tokens[0].size(), 7u);
  EXPECT_EQ(got["c"].tokens[0].size(), 6u);
  EXPECT_FALSE(got.count("b"));
  EXPECT_EQ(core->last_step().num_seqs, 2);

  conn.Complete(conn.last_id, OkStatus());
  auto rest = testing::RunToCompletion(*core);
  for (auto& [id, c] : rest) {
    auto& t = got[id].tokens[0];
    t.insert(t.end(), c.tokens[0].begin(), c.tokens[0].end());
    got[id].num_cached_tokens = c.num_cached_tokens;
  }
  EXPECT_EQ(got["a"].tokens[0], ReferenceGreedy(model, Prompt(6, 1), 30));
  EXPECT_EQ(got["b"].tokens[0], ReferenceGreedy(model, stored, 6));
  EXPECT_EQ(got["c"].tokens[0], ReferenceGreedy(model, Prompt(5, 2), 10));
  EXPECT_EQ(got["b"].num_cached_tokens, 20);
  EXPECT_EQ(core->Stats().kv_connector_loaded_tokens, 20u);
  EXPECT_EQ(core->Stats().kv_connector_failed_loads, 0u);
  EXPECT_EQ(core->block_manager().num_free_blocks(), model.num_blocks());
}

TEST(AsyncKvLoadTest, FailedLoadComputesTheWholePromptWithTheSameOutput) {
  FakeStore store;
  const auto stored = Prompt(22, 8);
  Produce(&store, stored);
  FakeModelRunner model({});
  AsyncMapConnector conn(&model, &store);
  auto core = MakeCore(&model, &conn);
  std::map<std::string, Collected> got;
  ASSERT_TRUE(core->AddRequest(Greedy("b", stored, 6)).ok());
  Step(*core, &got);
  ASSERT_EQ(conn.num_pending(), 1);
  Step(*core, &got);
  EXPECT_EQ(model.tokens_computed(), 0);
  conn.Complete(conn.last_id, UnavailableError("store unreachable (injected)"));
  auto r = testing::RunToCompletion(*core);
  EXPECT_EQ(r["b"].tokens[0], ReferenceGreedy(model, stored, 6));
  EXPECT_EQ(r["b"].num_cached_tokens, 0);
  EXPECT_EQ(model.tokens_computed(), 22 + 5);
  EXPECT_EQ(core->Stats().kv_connector_failed_loads, 1u);
  EXPECT_EQ(core->Stats().kv_connector_loaded_tokens, 0u);
}

TEST(AsyncKvLoadTest, AbortWhileLoadingFreesTheBlocksOnceTheLoadEnds) {
  FakeStore store;
  const auto stored = Prompt(22, 8);
  Produce(&store, stored);
  FakeModelRunner model({});
  AsyncMapConnector conn(&model, &store);
  auto core = MakeCore(&model, &conn);
  const int free_at_start = core->block_manager().num_free_blocks();
  std::map<std::string, Collected> got;
  ASSERT_TRUE(core->AddRequest(Greedy("b", stored, 6)).ok());
  Step(*core, &got);
  ASSERT_EQ(conn.num_pending(), 1);
  const int free_while_loading = core->block_manager().num_free_blocks();
  EXPECT_LT(free_while_loading, free_at_start);

  auto outs = core->Abort("b");
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].finish, FinishReason::kAbort);
  EXPECT_TRUE(conn.cancelled.count(conn.last_id));
  // The load may still write the blocks: they stay allocated until it ends.
  for (int i = 0; i < 3; ++i) Step(*core, &got);
  EXPECT_EQ(core->block_manager().num_free_blocks(), free_while_loading);
  EXPECT_TRUE(core->HasUnfinishedRequests()) << "a load in flight is work left";

  conn.Complete(conn.last_id, CancelledError("cancelled"));
  Step(*core, &got);
  EXPECT_EQ(core->block_manager().num_free_blocks(), free_at_start);
  EXPECT_FALSE(core->HasUnfinishedRequests());
  // Freed once: another request runs normally over the same blocks.
  ASSERT_TRUE(core->AddRequest(Greedy("b2", stored, 6)).ok());
  Step(*core, &got);
  conn.Complete(conn.last_id, OkStatus());
  auto r = testing::RunToCompletion(*core);
  EXPECT_EQ(r["b2"].tokens[0], ReferenceGreedy(model, stored, 6));
  EXPECT_EQ(core->block_manager().num_free_blocks(), free_at_start);
}

TEST(AsyncKvLoadTest, DestroyingTheEngineWaitsForLoadsInFlight) {
  FakeStore store;
  const auto stored = Prompt(22, 8);
  Produce(&store, stored);
  FakeModelRunner model({});
  AsyncMapConnector conn(&model, &store);
  conn.complete_on_cancel = true;
  {
    auto core = MakeCore(&model, &conn);
    ASSERT_TRUE(core->AddRequest(Greedy("b", stored, 6)).ok());
    core->Step();
    ASSERT_EQ(conn.num_pending(), 1);
  }
  EXPECT_EQ(conn.num_pending(), 0);
  EXPECT_TRUE(conn.cancelled.count(conn.last_id));
}

}  // namespace
}  // namespace crescent::engine
