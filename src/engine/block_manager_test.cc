#include "engine/block_manager.h"

#include <gtest/gtest.h>

#include <random>

namespace crescent::engine {
namespace {

constexpr int kBlock = 4;
constexpr uint64_t kSeed = 42;

std::vector<BlockHash> Hashes(const std::vector<int32_t>& tokens) {
  std::vector<BlockHash> h;
  ExtendBlockHashes(tokens, kBlock, kSeed, &h);
  return h;
}

BlockManager Make(int num_blocks) {
  return BlockManager(BlockManagerOptions{num_blocks, kBlock, true});
}

TEST(BlockHashTest, ChainsOverTheWholePrefix) {
  const std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  std::vector<int32_t> b = a;
  b[0] = 100;  // differs only in the first block
  auto ha = Hashes(a), hb = Hashes(b);
  ASSERT_EQ(ha.size(), 2u);  // the partial third block has no hash
  EXPECT_NE(ha[0], hb[0]);
  EXPECT_NE(ha[1], hb[1]) << "second block's tokens are equal, but its prefix is not";
  // Same tokens, another model lineage: other hashes.
  std::vector<BlockHash> other;
  ExtendBlockHashes(a, kBlock, HashSeedFromFingerprint("other-model"), &other);
  EXPECT_NE(ha[0], other[0]);
  // Extending keeps the old hashes and adds the new block's.
  std::vector<int32_t> longer = a;
  for (int t : {10, 11, 12}) longer.push_back(t);
  auto h3 = ha;
  ExtendBlockHashes(longer, kBlock, kSeed, &h3);
  ASSERT_EQ(h3.size(), 3u);
  EXPECT_EQ(h3[0], ha[0]);
  EXPECT_EQ(h3, Hashes(longer));
}

TEST(BlockManagerTest, AllocateAndFreeWithoutLeaks) {
  BlockManager bm = Make(8);
  BlockTable t;
  ASSERT_TRUE(bm.Allocate(&t, 5));  // 2 blocks
  EXPECT_EQ(t.blocks.size(), 2u);
  EXPECT_EQ(bm.num_free_blocks(), 6);
  ASSERT_TRUE(bm.Allocate(&t, 8));  // still 2
  EXPECT_EQ(t.blocks.size(), 2u);
  ASSERT_TRUE(bm.Allocate(&t, 9));
  EXPECT_EQ(t.blocks.size(), 3u);
  EXPECT_TRUE(bm.CheckInvariants().ok());
  BlockTable big;
  EXPECT_FALSE(bm.Allocate(&big, 6 * kBlock)) << "only 5 free blocks";
  EXPECT_TRUE(big.blocks.empty());
  EXPECT_EQ(bm.num_free_blocks(), 5);
  bm.Free(&t);
  EXPECT_TRUE(t.blocks.empty());
  EXPECT_EQ(bm.num_free_blocks(), 8);
  EXPECT_TRUE(bm.CheckInvariants().ok());
}

TEST(BlockManagerTest, SharedPrefixIsReferenceCounted) {
  BlockManager bm = Make(10);
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  auto hashes = Hashes(prompt);
  BlockTable a;
  ASSERT_TRUE(bm.Allocate(&a, 10));
  bm.CacheFullBlocks(&a, hashes, 2);
  EXPECT_EQ(bm.num_cached_hashes(), 2);

  auto hit = bm.FindCachedPrefix(hashes);
  ASSERT_EQ(hit.size(), 2u);
  EXPECT_EQ(hit[0], a.blocks[0]);
  EXPECT_EQ(hit[1], a.blocks[1]);
  BlockTable b;
  ASSERT_TRUE(bm.Allocate(&b, 10, hit));
  EXPECT_EQ(b.blocks[0], a.blocks[0]);
  EXPECT_NE(b.blocks[2], a.blocks[2]) << "the partial block is private";
  EXPECT_EQ(bm.ref_count(a.blocks[0]), 2);
  EXPECT_EQ(bm.ref_count(a.blocks[2]), 1);
  EXPECT_EQ(b.num_cached_blocks, 2);
  EXPECT_TRUE(bm.CheckInvariants().ok());

  bm.Free(&a);
  EXPECT_EQ(bm.ref_count(b.blocks[0]), 1);
  EXPECT_EQ(bm.num_free_blocks(), 10 - 3);
  bm.Free(&b);
  EXPECT_EQ(bm.num_free_blocks(), 10);
  EXPECT_EQ(bm.num_cached_hashes(), 2) << "freed blocks keep their KV for later hits";
  EXPECT_TRUE(bm.CheckInvariants().ok());

  // A hit on unreferenced cached blocks takes them off the free list.
  hit = bm.FindCachedPrefix(hashes);
  ASSERT_EQ(hit.size(), 2u);
  EXPECT_EQ(bm.BlocksNeeded(BlockTable{}, 10, hit), 3);
  BlockTable c;
  ASSERT_TRUE(bm.Allocate(&c, 10, hit));
  EXPECT_EQ(bm.num_free_blocks(), 7);
  EXPECT_TRUE(bm.CheckInvariants().ok());
  bm.Free(&c);
}

TEST(BlockManagerTest, EvictsLeastRecentlyFreedAndTailFirst) {
  BlockManager bm = Make(4);
  const std::vector<int32_t> p1 = {1, 1, 1, 1, 2, 2, 2, 2};
  const std::vector<int32_t> p2 = {3, 3, 3, 3, 4, 4, 4, 4};
  BlockTable a, b;
  ASSERT_TRUE(bm.Allocate(&a, 8));
  bm.CacheFullBlocks(&a, Hashes(p1), 2);
  ASSERT_TRUE(bm.Allocate(&b, 8));
  bm.CacheFullBlocks(&b, Hashes(p2), 2);
  bm.Free(&a);  // p1 freed first: least recently used
  bm.Free(&b);
  EXPECT_EQ(bm.num_cached_hashes(), 4);
  // One new block: evicts p1's *last* block, keeping p1's first block.
  BlockTable c;
  ASSERT_TRUE(bm.Allocate(&c, 1));
  EXPECT_EQ(bm.stats().evictions, 1u);
  EXPECT_EQ(bm.FindCachedPrefix(Hashes(p1)).size(), 1u);
  EXPECT_EQ(bm.FindCachedPrefix(Hashes(p2)).size(), 2u);
  ASSERT_TRUE(bm.Allocate(&c, 5));
  EXPECT_EQ(bm.FindCachedPrefix(Hashes(p1)).size(), 0u);
  EXPECT_EQ(bm.FindCachedPrefix(Hashes(p2)).size(), 2u);
  EXPECT_TRUE(bm.CheckInvariants().ok());
  bm.Free(&c);
  EXPECT_TRUE(bm.CheckInvariants().ok());
}

TEST(BlockManagerTest, UncachedBlocksAreReusedBeforeCachedOnes) {
  BlockManager bm = Make(4);
  BlockTable a, b;
  ASSERT_TRUE(bm.Allocate(&a, 4));
  bm.CacheFullBlocks(&a, Hashes({5, 6, 7, 8}), 1);
  ASSERT_TRUE(bm.Allocate(&b, 2));  // partial, never cached
  const BlockId uncached = b.blocks[0];
  bm.Free(&a);
  bm.Free(&b);
  BlockTable c;
  ASSERT_TRUE(bm.Allocate(&c, 1));
  EXPECT_EQ(c.blocks[0], uncached);
  EXPECT_EQ(bm.num_cached_hashes(), 1);
  bm.Free(&c);
}

TEST(BlockManagerTest, DuplicateContentLeavesTheTwinUnregistered) {
  BlockManager bm = Make(6);
  auto h = Hashes({1, 2, 3, 4});
  BlockTable a, b;
  ASSERT_TRUE(bm.Allocate(&a, 4));
  ASSERT_TRUE(bm.Allocate(&b, 4));  // computed the same prompt in parallel
  bm.CacheFullBlocks(&a, h, 1);
  bm.CacheFullBlocks(&b, h, 1);
  EXPECT_EQ(bm.num_cached_hashes(), 1);
  EXPECT_EQ(bm.FindCachedPrefix(h)[0], a.blocks[0]);
  bm.Free(&a);
  bm.Free(&b);
  EXPECT_TRUE(bm.CheckInvariants().ok());
}

TEST(BlockManagerTest, PrefixCachingOffNeverHits) {
  BlockManager bm(BlockManagerOptions{4, kBlock, false});
  auto h = Hashes({1, 2, 3, 4});
  BlockTable a;
  ASSERT_TRUE(bm.Allocate(&a, 4));
  bm.CacheFullBlocks(&a, h, 1);
  EXPECT_TRUE(bm.FindCachedPrefix(h).empty());
  bm.Free(&a);
}

// Random allocate / share / free sequences keep every invariant and return
// every block at the end.
TEST(BlockManagerTest, RandomOperationsKeepInvariants) {
  std::mt19937 rng(7);
  BlockManager bm = Make(32);
  struct Seq {
    std::vector<int32_t> tokens;
    BlockTable table;
  };
  std::vector<Seq> live;
  for (int op = 0; op < 3000; ++op) {
    const int kind = rng() % 3;
    if (kind == 0 || live.empty()) {
      Seq s;
      const int len = 1 + rng() % 20;
      for (int i = 0; i < len; ++i) s.tokens.push_back(rng() % 3);  // many shared prefixes
      auto h = Hashes(s.tokens);
      h.resize(std::min<size_t>(h.size(), (len - 1) / kBlock));
      auto hit = bm.FindCachedPrefix(h);
      if (bm.Allocate(&s.table, len, hit)) {
        bm.CacheFullBlocks(&s.table, Hashes(s.tokens), len / kBlock);
        live.push_back(std::move(s));
      }
    } else if (kind == 1) {
      Seq& s = live[rng() % live.size()];
      s.tokens.push_back(rng() % 3);
      if (bm.Allocate(&s.table, static_cast<int>(s.tokens.size())))
        bm.CacheFullBlocks(&s.table, Hashes(s.tokens), static_cast<int>(s.tokens.size()) / kBlock);
      else
        s.tokens.pop_back();
    } else {
      const size_t i = rng() % live.size();
      bm.Free(&live[i].table);
      live.erase(live.begin() + i);
    }
    Status st = bm.CheckInvariants();
    ASSERT_TRUE(st.ok()) << "after op " << op << ": " << st.ToString();
  }
  for (Seq& s : live) bm.Free(&s.table);
  EXPECT_EQ(bm.num_free_blocks(), 32);
  EXPECT_TRUE(bm.CheckInvariants().ok());
}

}  // namespace
}  // namespace crescent::engine
