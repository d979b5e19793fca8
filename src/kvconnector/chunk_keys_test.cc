#include "kvconnector/chunk_keys.h"

#include <gtest/gtest.h>

namespace crescent::kvconnector {
namespace {

KvLineage Lineage() {
  KvLineage l;
  l.model_fingerprint = "00ff";
  l.layout_tag = "kv1-f32-L3-H2-D32-B16";
  l.block_size = 16;
  l.chunk_tokens = 64;  // 4 blocks
  return l;
}

std::vector<engine::BlockHash> Hashes(int n) {
  std::vector<engine::BlockHash> h;
  for (int i = 0; i < n; ++i) h.push_back(0x1000 + i);
  return h;
}

TEST(ChunkKeysTest, KeyNamesLineageAndEndHash) {
  KvLineage l = Lineage();
  EXPECT_EQ(ChunkKey(l, 0xabc), "crescent-kv/00ff/kv1-f32-L3-H2-D32-B16/tp0of1/c64/0000000000000abc");
  l.tp_rank = 1;
  l.tp_size = 2;
  EXPECT_NE(ChunkKey(l, 0xabc), ChunkKey(Lineage(), 0xabc));
}

TEST(ChunkKeysTest, PromptIsWholeChunksThenTail) {
  const auto h = Hashes(10);  // 2 whole chunks of 4 blocks, tail of 2
  auto chunks = ChunksOfPrompt(Lineage(), h);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].begin_block, 0);
  EXPECT_EQ(chunks[0].end_block, 4);
  EXPECT_EQ(chunks[1].begin_block, 4);
  EXPECT_EQ(chunks[1].end_block, 8);
  EXPECT_EQ(chunks[2].begin_block, 8);
  EXPECT_EQ(chunks[2].end_block, 10);
  EXPECT_EQ(chunks[2].key, ChunkKey(Lineage(), h[9]));
  EXPECT_EQ(ChunksOfPrompt(Lineage(), Hashes(8)).size(), 2u);
  EXPECT_TRUE(ChunksOfPrompt(Lineage(), {}).empty());
}

// exists[] over the lookup keys for blocks ends first+1..max.
std::vector<bool> Stored(int first, std::vector<int> ends, int n = 14) {
  std::vector<bool> e(n - first, false);
  for (int end : ends)
    if (end > first && end <= n) e[end - first - 1] = true;
  return e;
}

TEST(ChunkKeysTest, PlanTakesTheLongestContiguousRun) {
  const auto h = Hashes(14);
  const KvLineage l = Lineage();
  EXPECT_EQ(LookupKeys(l, h, 0).size(), 14u);
  EXPECT_EQ(LookupKeys(l, h, 0)[3], ChunkKey(l, h[3]));
  EXPECT_EQ(LookupKeys(l, h, 6).size(), 8u);

  // A 10-block prompt stored (chunks end at 4, 8, tail 10): a 14-block
  // prompt sharing it loads all 10.
  auto plan = PlanLoad(l, h, 0, 14, Stored(0, {4, 8, 10}));
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan.back().begin_block, 8);
  EXPECT_EQ(plan.back().end_block, 10);

  // A gap (chunk 0 evicted) means nothing can be loaded.
  EXPECT_TRUE(PlanLoad(l, h, 0, 14, Stored(0, {8, 10})).empty());
  // A gap later ends the run there.
  plan = PlanLoad(l, h, 0, 14, Stored(0, {4, 12}));
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].end_block, 4);
  // The longest tail within a chunk wins.
  plan = PlanLoad(l, h, 0, 14, Stored(0, {4, 5, 7}));
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[1].begin_block, 4);
  EXPECT_EQ(plan[1].end_block, 7);
}

TEST(ChunkKeysTest, PlanStartsInsideTheChunkHoldingTheLocalPrefix) {
  const auto h = Hashes(14);
  const KvLineage l = Lineage();
  // 6 blocks cached locally: the chunk [4, 8) is still needed for 6..8.
  auto plan = PlanLoad(l, h, 6, 14, Stored(6, {8, 12}));
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].begin_block, 4);
  EXPECT_EQ(plan[0].end_block, 8);
  EXPECT_EQ(plan[1].end_block, 12);
  EXPECT_TRUE(PlanLoad(l, h, 6, 14, Stored(6, {})).empty());
}

TEST(ChunkKeysTest, PlanStopsAtTheChunkThatReachesTheNeed) {
  const auto h = Hashes(14);
  const KvLineage l = Lineage();
  // An 8-block prompt (two whole chunks) must compute its last token, so
  // it needs 7 blocks: the second chunk is loaded and its last block unused.
  auto plan = PlanLoad(l, h, 0, 7, Stored(0, {4, 8}));
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[1].end_block, 8);
  // Chunks past the need are not loaded.
  plan = PlanLoad(l, h, 0, 4, Stored(0, {4, 8, 12}));
  ASSERT_EQ(plan.size(), 1u);
}

}  // namespace
}  // namespace crescent::kvconnector
