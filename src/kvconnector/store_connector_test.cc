// The store connector between real engines over the real CPU model runtime
// (the tiny fixture models), a real master (gRPC + its HTTP metadata
// service on loopback) and real store clients, in one process. Separate
// processes (`crescent serve`, kill -9) are in connector_process_test.cc.
#include "kvconnector/store_connector_testutil.h"

namespace crescent::kvconnector {
namespace kvtest {

void StoreConnectorTest::ProducerThenConsumer() {
  Instance colocated = Make(nullptr);
  Instance producer = Make(&kProducer);
  Instance consumer = Make(&kConsumer);
  ASSERT_TRUE(producer.connector && consumer.connector);
  // Longer than a chunk and not a multiple of it; exactly two chunks; one
  // block and a bit; shorter than a block.
  const std::vector<int> lengths = {150, 64, 20, 9};
  uint64_t expect_loaded = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    const auto prompt = RandomPrompt(lengths[i], 100 + i);
    const std::string id = "r" + std::to_string(i);
    const auto want = colocated.Generate(id, prompt, 8);
    // The proxy's flow: a one-token prefill on the producer, whose response
    // completes only once the KV is stored; then the consumer.
    const auto first = producer.Generate(id, prompt, 1);
    ASSERT_EQ(first.size(), 1u);
    EXPECT_EQ(first[0], want[0]) << "prompt " << lengths[i];
    EXPECT_EQ(consumer.Generate(id, prompt, 8), want) << "prompt " << lengths[i];
    // Everything but the last prompt token's block remainder is loaded.
    expect_loaded += (lengths[i] - 1) / kBlockSize * kBlockSize;
  }
  // A prompt sharing 3 blocks (50 tokens) with the first one: the consumer
  // has those in its own prefix cache, so the chunk [2, 4) is needed only
  // from its second block on (the first is read and dropped).
  auto partial = RandomPrompt(lengths[0], 100);
  partial.resize(50);
  const auto tail = RandomPrompt(60, 200);
  partial.insert(partial.end(), tail.begin(), tail.end());
  const auto want = colocated.Generate("partial", partial, 8);
  EXPECT_EQ(producer.Generate("partial", partial, 1)[0], want[0]);
  EXPECT_EQ(consumer.Generate("partial", partial, 8), want);
  expect_loaded += (110 - 1) / kBlockSize * kBlockSize - 3 * kBlockSize;

  const auto s = consumer.connector->stats();
  EXPECT_EQ(s.loaded_tokens, expect_loaded);
  EXPECT_EQ(s.load_failures + s.lookup_failures, 0u);
  EXPECT_GT(s.load_bytes, 0u);
  EXPECT_EQ(producer.connector->stats().save_failures, 0u);
  EXPECT_EQ(producer.connector->stats().loaded_tokens, 0u);  // producers do not load
}

}  // namespace kvtest
namespace {

using namespace kvtest;  // NOLINT: the fixture's helpers

TEST_P(StoreConnectorTest, ConsumerLoadsWhatTheProducerPrefilledAndAgreesWithColocated) {
  ProducerThenConsumer();
}

// As a backend whose pool is not in host memory (a GPU's) is served:
// through the staging buffer and WriteKvBlocks.
TEST_P(StoreConnectorTest, ThroughStagingLikeADevicePool) {
  read_into_pool_ = false;
  ProducerThenConsumer();
}

// Loads on the engine thread (async_load: false), as before asynchronous loads.
TEST_P(StoreConnectorTest, SynchronousLoadsAgreeWithColocated) {
  async_load_ = false;
  ProducerThenConsumer();
}

TEST_P(StoreConnectorTest, InstancesOfRoleBothShareLongestCommonPrefix) {
  Instance colocated = Make(nullptr);
  Instance a = Make(&kBoth);
  Instance b = Make(&kBoth);
  const auto base = RandomPrompt(100, 7);  // 6 full blocks: chunks end at 2, 4, 6
  auto longer = base;
  const auto more = RandomPrompt(60, 8);
  longer.insert(longer.end(), more.begin(), more.end());
  auto diverging = base;
  diverging.resize(40);  // shares 2.5 blocks: the first chunk
  const auto tail = RandomPrompt(50, 9);
  diverging.insert(diverging.end(), tail.begin(), tail.end());

  EXPECT_EQ(a.Generate("base", base, 4), colocated.Generate("base", base, 4));
  // B extends A's prompt: all 96 tokens of A's full blocks come from the store.
  EXPECT_EQ(b.Generate("longer", longer, 6), colocated.Generate("longer", longer, 6));
  EXPECT_EQ(b.connector->stats().loaded_tokens, 96u);
  // A third instance, for a prompt that shares only the first chunk with
  // those: it loads that chunk and computes the rest.
  Instance c = Make(&kBoth);
  EXPECT_EQ(c.Generate("div", diverging, 6), colocated.Generate("div", diverging, 6));
  EXPECT_EQ(c.connector->stats().loaded_tokens, 32u) << "only the shared first chunk";
  // A has that first chunk in its own prefix cache; the rest (blocks 2..5,
  // which C saved) comes from the store.
  EXPECT_EQ(a.Generate("div2", diverging, 6), colocated.Generate("div2", diverging, 6));
  EXPECT_EQ(a.connector->stats().loaded_tokens, 48u);
}

TEST_P(StoreConnectorTest, PromptLargerThanTheStagingBufferIsSavedWhole) {
  Instance colocated = Make(nullptr);
  // Room for two chunks; the prompt has nine blocks (five chunks).
  Instance producer = Make(&kProducer, 32 << 20, 2);
  Instance consumer = Make(&kConsumer);
  const auto prompt = RandomPrompt(150, 31);
  const auto want = colocated.Generate("big", prompt, 6);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(producer.Generate("big", prompt, 1)[0], want[0]);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3))
      << "the save waited for staging room that only its own chunks could free";
  EXPECT_EQ(producer.connector->stats().save_failures, 0u);
  EXPECT_EQ(producer.connector->stats().saved_tokens, 144u);
  EXPECT_EQ(consumer.Generate("big", prompt, 6), want);
  EXPECT_EQ(consumer.connector->stats().loaded_tokens, 144u);
}

TEST_P(StoreConnectorTest, FullStoreMeansComputingNotFailing) {
  Instance colocated = Make(nullptr);
  // A segment smaller than one chunk: every put fails for lack of room.
  Instance producer = Make(&kProducer, 4096);
  Instance consumer = Make(&kConsumer, 0);
  const auto prompt = RandomPrompt(120, 3);
  const auto want = colocated.Generate("x", prompt, 6);
  EXPECT_EQ(producer.Generate("x", prompt, 1)[0], want[0]);
  EXPECT_GT(producer.connector->stats().save_failures, 0u);
  EXPECT_EQ(consumer.Generate("x", prompt, 6), want);
  EXPECT_EQ(consumer.connector->stats().loaded_tokens, 0u);
}

TEST_P(StoreConnectorTest, MasterDownMeansComputingNotHanging) {
  Instance colocated = Make(nullptr);
  Instance producer = Make(&kProducer);
  Instance consumer = Make(&kConsumer);
  const auto prompt = RandomPrompt(90, 5);
  const auto want = colocated.Generate("y", prompt, 6);
  producer.Generate("y", prompt, 1);
  master_.reset();  // the master goes away
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(consumer.Generate("y", prompt, 6), want);
  EXPECT_EQ(producer.Generate("y2", prompt, 6), want);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  EXPECT_EQ(consumer.connector->stats().loaded_tokens, 0u);
  EXPECT_GT(consumer.connector->stats().lookup_failures, 0u);
  // And it comes back: a restarted master (same port) serves again once the
  // clients have re-mounted.
  StartMaster();
  ASSERT_TRUE(master_);
  bool loaded = false;
  for (int attempt = 0; attempt < 50 && !loaded; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const std::string id = "z" + std::to_string(attempt);
    // A new prompt each time: the consumer's own prefix cache would
    // otherwise hold it after the first attempt.
    const auto p2 = RandomPrompt(70, 1000 + attempt);
    const auto want2 = colocated.Generate(id, p2, 4);
    producer.Generate(id, p2, 1);
    const uint64_t before = consumer.connector->stats().loaded_tokens;
    EXPECT_EQ(consumer.Generate(id, p2, 4), want2);
    loaded = consumer.connector->stats().loaded_tokens > before;
  }
  EXPECT_TRUE(loaded) << "the connector never used the restarted master";
}

INSTANTIATE_TEST_SUITE_P(Models, StoreConnectorTest,
                         ::testing::Values("tiny-qwen3", "tiny-qwen2", "tiny-llama3"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace crescent::kvconnector
