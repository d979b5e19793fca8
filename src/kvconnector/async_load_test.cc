// Asynchronous loads through the real store connector (StartLoadKv on its
// loader thread): while one request's KV loads, the engine keeps running the
// others; a load that fails or whose request is aborted leaves the same
// output and the KV cache's blocks accounted for. A gate wrapped around the
// real connector holds back the report of finished loads, which makes a load
// as slow as the test needs.
#include <condition_variable>
#include <mutex>

#include "kvconnector/store_connector_testutil.h"
#include "store/client.h"

namespace crescent::kvconnector {
namespace {

using namespace kvtest;  // NOLINT: the fixture's helpers
using std::chrono::milliseconds;
using std::chrono::seconds;

// Forwards to the real connector; while closed, finished loads are not
// reported to the engine (and a synchronous load blocks the engine thread,
// as a slow read would). `before_load` runs as each load starts.
class GatedConnector : public engine::KvConnector {
 public:
  explicit GatedConnector(engine::KvConnector* inner) : inner_(inner) {}

  int MatchTokens(const engine::KvSequenceView& seq, int num_local_tokens) override {
    return inner_->MatchTokens(seq, num_local_tokens);
  }
  Status LoadKv(const engine::KvSequenceView& seq, int begin, int end,
                std::span<const engine::BlockId> blocks) override {
    return inner_->LoadKv(seq, begin, end, blocks);
  }
  engine::KvLoadStart StartLoadKv(const engine::KvSequenceView& seq, engine::KvLoadId id,
                                  int begin, int end,
                                  std::span<const engine::BlockId> blocks) override {
    if (before_load) before_load();
    engine::KvLoadStart started = inner_->StartLoadKv(seq, id, begin, end, blocks);
    {
      std::lock_guard lock(mu_);
      ++loads_started_;
    }
    cv_.notify_all();
    if (!started.async) {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, seconds(15), [&] { return open_; });
    }
    return started;
  }
  std::vector<engine::KvLoadDone> PollFinishedLoads() override {
    auto done = inner_->PollFinishedLoads();
    held_.insert(held_.end(), std::make_move_iterator(done.begin()),
                 std::make_move_iterator(done.end()));
    std::lock_guard lock(mu_);
    if (!open_) return {};
    return std::exchange(held_, {});
  }
  void CancelLoad(engine::KvLoadId id) override { inner_->CancelLoad(id); }
  void OnPrefillDone(const engine::KvSequenceView& seq,
                     std::span<const engine::BlockId> blocks) override {
    inner_->OnPrefillDone(seq, blocks);
  }
  bool HoldFinish(std::string_view request_id, std::function<void()> release) override {
    return inner_->HoldFinish(request_id, std::move(release));
  }

  void SetOpen(bool open) {
    {
      std::lock_guard lock(mu_);
      open_ = open;
    }
    cv_.notify_all();
  }
  bool WaitForLoads(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, seconds(10), [&] { return loads_started_ >= n; });
  }

  std::function<void()> before_load;  // engine thread

 private:
  engine::KvConnector* const inner_;
  std::vector<engine::KvLoadDone> held_;  // engine thread
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = true;
  int loads_started_ = 0;
};

// A request's stream, read by the test thread.
struct Stream {
  engine::OutputQueue q;
  std::vector<int32_t> tokens;
  std::optional<engine::FinishReason> finish;
  bool finished = false;

  // Takes the next delta; false when none came within the timeout.
  bool Next(milliseconds timeout = milliseconds(10000)) {
    auto out = q.Pop(timeout);
    if (!out) return false;
    EXPECT_TRUE(out->error.ok()) << out->error.ToString();
    tokens.insert(tokens.end(), out->new_tokens.begin(), out->new_tokens.end());
    if (out->finish) finish = out->finish;
    finished |= out->request_finished;
    return true;
  }
  const std::vector<int32_t>& Drain() {
    while (!finished && Next()) {
    }
    EXPECT_TRUE(finished) << "the request did not finish";
    return tokens;
  }
};

class AsyncLoadTest : public StoreConnectorTest {
 protected:
  // A consumer whose connector is wrapped in a gate (gate_).
  Instance MakeGatedConsumer() {
    wrap_ = [this](StoreConnector* c) {
      auto g = std::make_unique<GatedConnector>(c);
      gate_ = g.get();
      return std::unique_ptr<engine::KvConnector>(std::move(g));
    };
    Instance consumer = Make(&kConsumer);
    wrap_ = nullptr;
    return consumer;
  }
  void Submit(Instance& in, const std::string& id, const std::vector<int32_t>& prompt,
              int max_tokens, Stream* s) {
    engine::EngineRequest r = engine::testing::Greedy(id, prompt, max_tokens);
    r.params.ignore_eos = true;
    Status st = in.engine->Submit(std::move(r), s->q.Callback());
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  void RunningRequestKeepsDecodingWhileAnotherLoads();

  GatedConnector* gate_ = nullptr;
};

void AsyncLoadTest::RunningRequestKeepsDecodingWhileAnotherLoads() {
  Instance colocated = Make(nullptr);
  Instance producer = Make(&kProducer);
  Instance consumer = MakeGatedConsumer();
  const auto a = RandomPrompt(40, 11);
  const auto b = RandomPrompt(150, 12);
  const auto want_a = colocated.Generate("a", a, 300);
  const auto want_b = colocated.Generate("b", b, 8);
  ASSERT_EQ(producer.Generate("b", b, 1)[0], want_b[0]);

  gate_->SetOpen(false);
  Stream sa, sb;
  Submit(consumer, "a", a, 300, &sa);
  ASSERT_TRUE(sa.Next()) << "a did not start";
  Submit(consumer, "b", b, 8, &sb);
  ASSERT_TRUE(gate_->WaitForLoads(1)) << "b's load did not start";
  // b's KV is loading (its end is held back): a keeps decoding meanwhile.
  const size_t at_load_start = sa.tokens.size();
  while (!sa.finished && sa.tokens.size() < at_load_start + 20) {
    if (!sa.Next()) break;
  }
  EXPECT_GE(sa.tokens.size(), at_load_start + 20) << "a stalled while b's KV loaded";
  EXPECT_TRUE(sb.tokens.empty()) << "b produced tokens before its load ended";
  gate_->SetOpen(true);
  EXPECT_EQ(sb.Drain(), want_b);
  EXPECT_EQ(sa.Drain(), want_a);
  const auto s = consumer.connector->stats();
  EXPECT_EQ(s.loaded_tokens, 144u);
  EXPECT_EQ(s.load_failures, 0u);
}

TEST_P(AsyncLoadTest, RunningRequestKeepsDecodingWhileAnotherLoads) {
  RunningRequestKeepsDecodingWhileAnotherLoads();
}

// The staging path (a device pool): blocks are written on the engine thread.
TEST_P(AsyncLoadTest, RunningRequestKeepsDecodingWhileAnotherLoadsThroughStaging) {
  read_into_pool_ = false;
  RunningRequestKeepsDecodingWhileAnotherLoads();
}

TEST_P(AsyncLoadTest, FailedLoadIsComputedWithTheSameOutput) {
  Instance colocated = Make(nullptr);
  Instance producer = Make(&kProducer);
  Instance consumer = MakeGatedConsumer();
  const auto b = RandomPrompt(150, 13);
  const auto want = colocated.Generate("b", b, 8);
  ASSERT_EQ(producer.Generate("b", b, 1)[0], want[0]);
  // Between the lookup and the load the chunks leave the store.
  store::ClientOptions o;
  o.config = StoreConfig(0, 0);
  auto remover = store::Client::Create(o);
  ASSERT_TRUE(remover.ok()) << remover.status().ToString();
  gate_->before_load = [&] {
    auto removed = (*remover)->RemoveAll();
    EXPECT_TRUE(removed.ok() && *removed > 0) << "nothing removed";
  };
  EXPECT_EQ(consumer.Generate("b", b, 8), want);
  const auto s = consumer.connector->stats();
  EXPECT_EQ(s.loaded_tokens, 0u);
  EXPECT_EQ(s.load_failures, 1u);
  EXPECT_EQ(consumer.engine->Stats().kv_connector_failed_loads, 1u);
  EXPECT_EQ(consumer.engine->Stats().kv_connector_loaded_tokens, 0u);
}

TEST_P(AsyncLoadTest, AbortWhileLoadingFreesTheBlocksOnce) {
  Instance colocated = Make(nullptr);
  Instance producer = Make(&kProducer);
  Instance consumer = MakeGatedConsumer();
  const auto b = RandomPrompt(150, 14);
  const auto want = colocated.Generate("b", b, 8);
  ASSERT_EQ(producer.Generate("b", b, 1)[0], want[0]);
  const int free_at_start = consumer.engine->Stats().num_free_blocks;

  gate_->SetOpen(false);
  Stream sb;
  Submit(consumer, "b", b, 8, &sb);
  ASSERT_TRUE(gate_->WaitForLoads(1));
  consumer.engine->Abort("b");
  sb.Drain();
  EXPECT_EQ(sb.finish, engine::FinishReason::kAbort);
  EXPECT_TRUE(sb.tokens.empty());
  // The load may still be writing them: the blocks stay allocated.
  std::this_thread::sleep_for(milliseconds(50));
  EXPECT_LT(consumer.engine->Stats().num_free_blocks, free_at_start);
  gate_->SetOpen(true);
  // Stats are refreshed once per engine loop: wait for them to settle.
  auto free_blocks_settle = [&] {
    const auto deadline = std::chrono::steady_clock::now() + seconds(5);
    while (consumer.engine->Stats().num_free_blocks != free_at_start &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(milliseconds(5));
    return consumer.engine->Stats().num_free_blocks;
  };
  EXPECT_EQ(free_blocks_settle(), free_at_start);
  // Freed exactly once: the same prompt loads and runs again.
  EXPECT_EQ(consumer.Generate("b2", b, 8), want);
  EXPECT_EQ(free_blocks_settle(), free_at_start);
  EXPECT_EQ(consumer.connector->stats().load_failures, 0u) << "a cancel is no store failure";
}

INSTANTIATE_TEST_SUITE_P(Models, AsyncLoadTest,
                         ::testing::Values("tiny-qwen3", "tiny-qwen2", "tiny-llama3"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace crescent::kvconnector
