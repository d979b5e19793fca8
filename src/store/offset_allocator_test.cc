#include "store/offset_allocator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace crescent::store {
namespace {

TEST(OffsetAllocatorTest, AllocatesAlignedAndCoalescesBackToOneBlock) {
  OffsetAllocator a(1 << 20, 64);
  auto x = a.Allocate(100);
  auto y = a.Allocate(1);
  auto z = a.Allocate(64);
  ASSERT_TRUE(x && y && z);
  EXPECT_EQ(*x % 64, 0u);
  EXPECT_EQ(*y % 64, 0u);
  EXPECT_EQ(a.allocated(), 128u + 64 + 64);
  a.Free(*y, 1);
  a.Free(*x, 100);
  a.Free(*z, 64);
  EXPECT_EQ(a.allocated(), 0u);
  EXPECT_EQ(a.free_blocks(), 1u);
  EXPECT_EQ(a.largest_free(), 1u << 20);
}

TEST(OffsetAllocatorTest, RejectsZeroAndTooLarge) {
  OffsetAllocator a(4096, 64);
  EXPECT_FALSE(a.Allocate(0));
  EXPECT_FALSE(a.Allocate(4097));
  EXPECT_TRUE(a.Allocate(4096));
  EXPECT_FALSE(a.Allocate(1));
}

TEST(OffsetAllocatorTest, BestFitPicksTheSmallestHole) {
  OffsetAllocator a(64 * 100, 64);
  std::vector<uint64_t> offs;
  for (int i = 0; i < 100; ++i) offs.push_back(*a.Allocate(64));
  a.Free(offs[10], 64 * 1);  // a 3-line hole and a 1-line hole
  a.Free(offs[50], 64);
  a.Free(offs[51], 64);
  a.Free(offs[52], 64);
  EXPECT_EQ(*a.Allocate(64), offs[10]);   // the exact fit, not the big hole
  EXPECT_EQ(*a.Allocate(128), offs[50]);  // then the 3-line hole
}

TEST(OffsetAllocatorTest, AllocateAtClaimsExactlyFreeRanges) {
  OffsetAllocator a(64 * 10, 64);
  EXPECT_TRUE(a.AllocateAt(128, 100));   // lines 2-3
  EXPECT_FALSE(a.AllocateAt(192, 64));   // overlaps
  EXPECT_FALSE(a.AllocateAt(100, 64));   // unaligned
  EXPECT_FALSE(a.AllocateAt(576, 128));  // past the end
  EXPECT_TRUE(a.AllocateAt(0, 64));
  EXPECT_EQ(*a.Allocate(64), 64u);       // the hole between them
  a.Free(128, 100);
  EXPECT_EQ(a.allocated(), 128u);
}

// Random allocate/free against a byte map: no two live ranges overlap and
// freeing everything restores one block.
TEST(OffsetAllocatorTest, RandomOpsNeverOverlap) {
  const uint64_t cap = 1 << 16;
  OffsetAllocator a(cap, 64);
  std::vector<int> owner(cap / 64, -1);
  std::vector<std::pair<uint64_t, uint64_t>> live;
  std::mt19937_64 rng(42);
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      uint64_t size = 1 + rng() % 3000;
      auto off = a.Allocate(size);
      if (!off) continue;
      for (uint64_t l = *off / 64; l < (*off + a.RoundUp(size)) / 64; ++l) {
        ASSERT_EQ(owner[l], -1) << "overlap at line " << l;
        owner[l] = step;
      }
      live.push_back({*off, size});
    } else {
      size_t i = rng() % live.size();
      auto [off, size] = live[i];
      for (uint64_t l = off / 64; l < (off + a.RoundUp(size)) / 64; ++l) owner[l] = -1;
      a.Free(off, size);
      live[i] = live.back();
      live.pop_back();
    }
  }
  for (auto [off, size] : live) a.Free(off, size);
  EXPECT_EQ(a.allocated(), 0u);
  EXPECT_EQ(a.free_blocks(), 1u);
}

// Utilisation under churn: fill a segment with values of random sizes until
// allocations fail, then repeatedly free a random 20% and refill. "At first
// failure" is the utilisation when the first request did not fit (what
// triggers eviction); "packed" keeps trying other requests until 64 in a row
// fail (how full the segment really gets).
struct Churn {
  double first_mean = 0, first_worst = 1, packed_mean = 0;
};

Churn MeasureChurn(uint64_t cap, uint64_t min_size, uint64_t max_size, uint64_t seed) {
  OffsetAllocator a(cap, 64);
  std::mt19937_64 rng(seed);
  std::vector<std::pair<uint64_t, uint64_t>> live;
  const double lmin = std::log(double(min_size)), lmax = std::log(double(max_size));
  auto random_size = [&] {
    std::uniform_real_distribution<double> d(lmin, lmax);
    return static_cast<uint64_t>(std::exp(d(rng)));
  };
  Churn c;
  const int kWarmup = 20, kRounds = 200;
  for (int round = 0; round < kRounds; ++round) {
    double first = -1;
    for (int fails = 0; fails < 64;) {
      uint64_t size = random_size();
      auto off = a.Allocate(size);
      if (!off) {
        if (first < 0) first = double(a.allocated()) / double(cap);
        ++fails;
        continue;
      }
      fails = 0;
      live.push_back({*off, size});
    }
    if (round >= kWarmup) {
      c.first_mean += first / (kRounds - kWarmup);
      c.first_worst = std::min(c.first_worst, first);
      c.packed_mean += double(a.allocated()) / double(cap) / (kRounds - kWarmup);
    }
    for (size_t n = live.size() / 5; n > 0; --n) {
      size_t i = rng() % live.size();
      a.Free(live[i].first, live[i].second);
      live[i] = live.back();
      live.pop_back();
    }
  }
  return c;
}

TEST(OffsetAllocatorTest, UtilisationUnderChurnStaysHigh) {
  // KV chunks: one size (the KV connector's case).
  Churn kv = MeasureChurn(256ull << 20, 300000, 300001, 1);
  // Log-uniform 4 KiB..1 MiB in a 256 MiB segment.
  Churn mixed = MeasureChurn(256ull << 20, 4096, 1 << 20, 2);
  // Up to 1/16 of the segment: a harsh case for any allocator.
  Churn large = MeasureChurn(64ull << 20, 64 << 10, 4 << 20, 3);
  for (auto [name, c] : {std::pair{"one size 293 KiB / 256 MiB", kv},
                         std::pair{"4 KiB-1 MiB / 256 MiB", mixed},
                         std::pair{"64 KiB-4 MiB / 64 MiB", large}}) {
    std::printf("churn %-28s at first failure: mean %.3f worst %.3f; packed mean %.3f\n", name,
                c.first_mean, c.first_worst, c.packed_mean);
  }
  EXPECT_GT(kv.first_worst, 0.99);
  EXPECT_GT(mixed.first_mean, 0.78);
  EXPECT_GT(mixed.packed_mean, 0.97);
  EXPECT_GT(large.packed_mean, 0.90);
}

}  // namespace
}  // namespace crescent::store
