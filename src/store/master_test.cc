#include "store/master.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "store/store_format.h"

namespace crescent::store {
namespace {

constexpr uint64_t kSeg = 1 << 20;  // 1 MiB segments

class MasterTest : public ::testing::Test {
 protected:
  void SetUp() override { Reset(MasterOptions{}); }
  void Reset(MasterOptions options) {
    options_ = options;
    master_ = MasterCore::Create(options_, &clock_);
  }
  void Mount(const std::string& client, const std::string& name, uint64_t size = kSeg,
             uint64_t base = 0x10000) {
    auto r = master_->MountSegment(client, SegmentSpec{name, base, size});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }
  // A complete put of `size` bytes; returns its replicas.
  std::vector<Replica> Put(const std::string& key, uint64_t size, uint32_t replicas = 1,
                           bool soft_pin = false) {
    auto r = master_->PutStart(PutStartArgs{key, size, replicas, soft_pin, ""});
    EXPECT_TRUE(r.ok()) << key << ": " << r.status().ToString();
    if (!r.ok()) return {};
    EXPECT_TRUE(master_->PutEnd(key, 0xC0FFEE).ok());
    return *r;
  }
  bool Has(const std::string& key) { return master_->Exist(key).value_or(false); }

  ManualClock clock_;
  MasterOptions options_;
  std::unique_ptr<MasterCore> master_;
};

TEST_F(MasterTest, TwoPhasePutPublishesOnlyAtPutEnd) {
  Mount("c1", "seg-a");
  auto start = master_->PutStart(PutStartArgs{"k", 1000, 1, false, ""});
  ASSERT_TRUE(start.ok());
  ASSERT_EQ(start->size(), 1u);
  EXPECT_EQ((*start)[0].segment, "seg-a");
  EXPECT_GE((*start)[0].address, 0x10000u);
  EXPECT_LE((*start)[0].address + 1000, 0x10000u + kSeg);
  EXPECT_FALSE(Has("k"));
  EXPECT_EQ(master_->GetReplicaList("k").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(master_->PutStart(PutStartArgs{"k", 10, 1, false, ""}).status().code(),
            StatusCode::kAlreadyExists);
  ASSERT_TRUE(master_->PutEnd("k", 1234).ok());
  auto got = master_->GetReplicaList("k");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->size, 1000u);
  EXPECT_EQ(got->crc32c, 1234u);
  EXPECT_EQ(got->replicas[0].address, (*start)[0].address);
  EXPECT_EQ(got->lease_ms, 10000);
  EXPECT_EQ(master_->PutEnd("k", 1).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(master_->PutStart(PutStartArgs{"k", 10, 1, false, ""}).status().code(),
            StatusCode::kAlreadyExists);
}

TEST_F(MasterTest, RevokeAndTimeoutFreeTheSpace) {
  Mount("c1", "seg-a");
  ASSERT_TRUE(master_->PutStart(PutStartArgs{"a", 5000, 1, false, ""}).ok());
  EXPECT_EQ(master_->Stats().allocated_bytes, 5056u);
  ASSERT_TRUE(master_->PutRevoke("a").ok());
  EXPECT_EQ(master_->Stats().allocated_bytes, 0u);
  EXPECT_EQ(master_->PutEnd("a", 0).code(), StatusCode::kNotFound);

  ASSERT_TRUE(master_->PutStart(PutStartArgs{"b", 5000, 1, false, ""}).ok());
  clock_.AdvanceMs(options_.put_timeout_ms - 100);
  master_->Ping("c1");
  master_->Tick();
  EXPECT_EQ(master_->Stats().pending_puts, 1u);
  clock_.AdvanceMs(200);
  master_->Ping("c1");
  master_->Tick();
  EXPECT_EQ(master_->Stats().pending_puts, 0u);
  EXPECT_EQ(master_->Stats().allocated_bytes, 0u);
  EXPECT_EQ(master_->Stats().reclaimed_puts, 1u);
  EXPECT_EQ(master_->PutEnd("b", 0).code(), StatusCode::kNotFound);
  // The key is free again.
  EXPECT_FALSE(Put("b", 10).empty());
}

TEST_F(MasterTest, LeasedObjectIsNeitherRemovedNorEvicted) {
  Mount("c1", "seg-a", 64 * 1024);
  Put("leased", 16 * 1024);
  ASSERT_TRUE(master_->GetReplicaList("leased").ok());
  EXPECT_EQ(master_->Remove("leased").code(), StatusCode::kFailedPrecondition);
  // Fill the rest; eviction must pick others, never the leased one.
  for (int i = 0; i < 20; ++i) Put("f" + std::to_string(i), 16 * 1024);
  EXPECT_TRUE(Has("leased"));
  EXPECT_GT(master_->Stats().evicted_objects, 0u);
  clock_.AdvanceMs(options_.default_kv_lease_ttl_ms + 1);
  EXPECT_TRUE(master_->Remove("leased").ok());
  EXPECT_FALSE(Has("leased"));
}

TEST_F(MasterTest, ReplicasLandOnDistinctSegments) {
  Mount("c1", "seg-a");
  Mount("c2", "seg-b");
  Mount("c3", "seg-c");
  for (int i = 0; i < 50; ++i) {
    auto reps = Put("k" + std::to_string(i), 3000, 3);
    std::set<std::string> segs;
    for (auto& r : reps) segs.insert(r.segment);
    EXPECT_EQ(segs.size(), 3u);
  }
  auto four = master_->PutStart(PutStartArgs{"x", 10, 4, false, ""});
  EXPECT_EQ(four.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(master_->PutStart(PutStartArgs{"x", 10, 0, false, ""}).status().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(MasterTest, PreferredSegmentIsUsedWhenItFits) {
  Mount("c1", "seg-a");
  Mount("c2", "seg-b");
  for (int i = 0; i < 10; ++i) {
    auto r = master_->PutStart(PutStartArgs{"p" + std::to_string(i), 4096, 1, false, "seg-b"});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ((*r)[0].segment, "seg-b");
  }
}

TEST_F(MasterTest, EvictionIsLeastRecentlyUsedFirstAndSoftPinnedLast) {
  Mount("c1", "seg-a", 100 * 1024);
  Put("pinned", 8 * 1024, 1, /*soft_pin=*/true);
  for (int i = 0; i < 10; ++i) Put("o" + std::to_string(i), 8 * 1024);
  // Touch o0 so it is the most recently used unpinned object.
  ASSERT_TRUE(master_->GetReplicaList("o0").ok());
  clock_.AdvanceMs(options_.default_kv_lease_ttl_ms + 1);  // lease over, recency kept
  for (int i = 0; i < 4; ++i) Put("n" + std::to_string(i), 8 * 1024);
  EXPECT_TRUE(Has("pinned"));
  EXPECT_TRUE(Has("o0"));
  EXPECT_FALSE(Has("o1"));  // least recently used went first
  EXPECT_TRUE(Has("o9"));
  EXPECT_TRUE(Has("n3"));
  // When only pinned objects are left, they go too rather than fail the put.
  for (const auto& key : master_->ListKeys("", 100)) {
    if (key != "pinned") {
      ASSERT_TRUE(master_->Remove(key).ok()) << key;
    }
  }
  EXPECT_TRUE(Has("pinned"));
  EXPECT_EQ(master_->Stats().keys, 1u);
  Put("big", 95 * 1024);
  EXPECT_FALSE(Has("pinned"));
  EXPECT_TRUE(Has("big"));
}

TEST_F(MasterTest, HighWatermarkTriggersEvictionOfTheRatio) {
  MasterOptions o;
  o.eviction_high_watermark_ratio = 0.5;
  o.eviction_ratio = 0.2;
  Reset(o);
  Mount("c1", "seg-a", 64 * 1024 * 10);
  for (int i = 0; i < 5; ++i) Put("k" + std::to_string(i), 64 * 1024);  // 50%
  EXPECT_EQ(master_->Stats().evicted_objects, 0u);
  Put("k5", 64 * 1024);  // 60% > 50%: frees >= 20% (2 objects)
  auto s = master_->Stats();
  EXPECT_EQ(s.evicted_objects, 2u);
  EXPECT_EQ(s.allocated_bytes, 4u * 64 * 1024);
  EXPECT_FALSE(Has("k0"));
  EXPECT_TRUE(Has("k5"));
}

TEST_F(MasterTest, PendingPutsAreNeverEvicted) {
  Mount("c1", "seg-a", 64 * 1024);
  ASSERT_TRUE(master_->PutStart(PutStartArgs{"w", 48 * 1024, 1, false, ""}).ok());
  auto r = master_->PutStart(PutStartArgs{"x", 32 * 1024, 1, false, ""});
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(master_->PutEnd("w", 1).ok());
}

TEST_F(MasterTest, BadInputsGetClearErrors) {
  Mount("c1", "seg-a");
  auto bad = [&](PutStartArgs a) { return master_->PutStart(a).status(); };
  EXPECT_EQ(bad({"", 10, 1, false, ""}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad({std::string(kMaxKeyLength + 1, 'k'), 10, 1, false, ""}).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(bad({std::string("a\0b", 3), 10, 1, false, ""}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad({"zero", 0, 1, false, ""}).code(), StatusCode::kInvalidArgument);
  Status huge = bad({"huge", kSeg + 1, 1, false, ""});
  EXPECT_EQ(huge.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(huge.message().find("larger than every segment"), std::string::npos) << huge.message();
  EXPECT_TRUE(Put(std::string(kMaxKeyLength, 'k'), 10).size() == 1);
  EXPECT_EQ(master_->Exist("").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(master_->MountSegment("", {"s", 0, kSeg}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(master_->MountSegment("c2", {"seg-a", 0x10000, kSeg}).status().code(),
            StatusCode::kAlreadyExists);
}

TEST_F(MasterTest, SilentClientLosesItsSegmentsOthersKeepTheirs) {
  Mount("alive", "seg-a");
  Mount("dead", "seg-b");
  for (int i = 0; i < 20; ++i) Put("k" + std::to_string(i), 4096);
  auto both = Put("two", 4096, 2);
  for (int t = 0; t < 12; ++t) {  // 12 s of ticks; only "alive" pings
    clock_.AdvanceMs(1000);
    master_->Ping("alive");
    master_->Tick();
  }
  auto s = master_->Stats();
  EXPECT_EQ(s.clients, 1u);
  EXPECT_EQ(s.segments, 1u);
  EXPECT_EQ(s.expired_clients, 1u);
  auto two = master_->GetReplicaList("two");
  ASSERT_TRUE(two.ok());  // one copy survived
  ASSERT_EQ(two->replicas.size(), 1u);
  EXPECT_EQ(two->replicas[0].segment, "seg-a");
  for (int i = 0; i < 20; ++i) {
    auto r = master_->GetReplicaList("k" + std::to_string(i));
    if (r.ok()) {
      EXPECT_EQ(r->replicas[0].segment, "seg-a");
    }
  }
  EXPECT_EQ(s.allocated_bytes, master_->ListSegments()[0].allocated);
}

TEST_F(MasterTest, MasterStallDoesNotExpireHealthyClients) {
  Mount("c1", "seg-a");
  Put("k", 100);
  master_->Tick();
  clock_.AdvanceMs(30000);  // the master was frozen for 30 s
  master_->Tick();          // first tick after the stall: nobody expires
  EXPECT_EQ(master_->Stats().segments, 1u);
  EXPECT_EQ(master_->Stats().stalls, 1u);
  clock_.AdvanceMs(500);
  master_->Ping("c1");      // the client pings within its ttl of serving
  for (int t = 0; t < 30; ++t) {
    clock_.AdvanceMs(500);
    if (t % 4 == 0) master_->Ping("c1");
    master_->Tick();
  }
  EXPECT_TRUE(Has("k"));
  // ...but a client that stays silent after the stall does expire.
  for (int t = 0; t < 25; ++t) {
    clock_.AdvanceMs(500);
    master_->Tick();
  }
  EXPECT_FALSE(Has("k"));
}

TEST_F(MasterTest, OwnersLearnChangesAndReRegisterAfterRestart) {
  Mount("c1", "seg-a");
  Mount("c2", "seg-b");
  EXPECT_TRUE(master_->Ping("c1").events.empty());
  Put("x", 100);
  Put("y", 200, 2);
  ASSERT_TRUE(master_->Remove("x").ok());
  std::vector<SegmentObject> held;  // c1's view of seg-a
  std::map<std::string, SegmentObject> by_key;
  for (auto& e : master_->Ping("c1").events) {
    if (e.added) by_key[e.object.key + "@" + std::to_string(e.object.offset)] = e.object;
    else by_key.erase(e.object.key + "@" + std::to_string(e.object.offset));
  }
  for (auto& [k, o] : by_key) held.push_back(o);
  auto y = master_->GetReplicaList("y");
  ASSERT_TRUE(y.ok());

  // A new master knows nothing; c1 re-mounts with what it holds.
  Reset(MasterOptions{});
  EXPECT_FALSE(master_->Ping("c1").known);
  EXPECT_FALSE(Has("y"));
  auto taken = master_->MountSegment("c1", {"seg-a", 0x10000, kSeg}, held);
  ASSERT_TRUE(taken.ok());
  auto y2 = master_->GetReplicaList("y");
  ASSERT_TRUE(y2.ok());
  EXPECT_EQ(y2->crc32c, y->crc32c);
  EXPECT_EQ(y2->size, 200u);
  EXPECT_FALSE(Has("x"));  // removed before the restart: not resurrected
  // The re-registered range is taken: new puts land elsewhere.
  EXPECT_EQ(master_->Stats().allocated_bytes, 256u * *taken);
  auto z = Put("z", 1000);
  EXPECT_NE(z[0].address, y2->replicas[0].address);
}

TEST_F(MasterTest, EventOverflowFallsBackToASnapshot) {
  MasterOptions o;
  o.max_events_per_client = 4;
  Reset(o);
  Mount("c1", "seg-a");
  for (int i = 0; i < 10; ++i) Put("k" + std::to_string(i), 64);
  auto ping = master_->Ping("c1");
  EXPECT_TRUE(ping.snapshot);
  EXPECT_EQ(ping.events.size(), 10u);
  EXPECT_FALSE(master_->Ping("c1").snapshot);
}

TEST_F(MasterTest, UnmountDropsCopiesAndRemoveAllSkipsLeases) {
  Mount("c1", "seg-a");
  Mount("c2", "seg-b");
  for (int i = 0; i < 10; ++i) Put("k" + std::to_string(i), 4096);
  ASSERT_TRUE(master_->UnmountSegment("c2", "seg-b", 0x10000).ok());
  EXPECT_EQ(master_->UnmountSegment("c2", "seg-b", 0x10000).code(), StatusCode::kNotFound);
  EXPECT_EQ(master_->UnmountSegment("c2", "seg-a", 0x10000).code(),
            StatusCode::kFailedPrecondition);
  const uint64_t left = master_->Stats().keys;
  EXPECT_GT(left, 0u);
  std::string leased;
  for (int i = 0; i < 10 && leased.empty(); ++i) {
    if (Has("k" + std::to_string(i))) leased = "k" + std::to_string(i);
  }
  ASSERT_TRUE(master_->GetReplicaList(leased).ok());
  EXPECT_EQ(master_->RemoveAll(), left - 1);
  EXPECT_TRUE(Has(leased));
}

TEST_F(MasterTest, BatchFormsReportPerItem) {
  Mount("c1", "seg-a");
  std::vector<PutStartArgs> items = {{"a", 10, 1, false, ""}, {"", 10, 1, false, ""},
                                     {"b", 20, 1, false, ""}};
  auto starts = master_->BatchPutStart(items);
  ASSERT_EQ(starts.size(), 3u);
  EXPECT_TRUE(starts[0].ok());
  EXPECT_EQ(starts[1].status().code(), StatusCode::kInvalidArgument);
  auto ends = master_->BatchPutEnd({"a", "b", "c"}, {1, 2, 3});
  EXPECT_TRUE(ends[0].ok() && ends[1].ok());
  EXPECT_EQ(ends[2].code(), StatusCode::kNotFound);
  auto exist = master_->BatchExist({"a", "c", "b"});
  EXPECT_TRUE(*exist[0]);
  EXPECT_FALSE(*exist[1]);
  auto gets = master_->BatchGetReplicaList({"b", "zz"});
  EXPECT_EQ(gets[0]->crc32c, 2u);
  EXPECT_EQ(gets[1].status().code(), StatusCode::kNotFound);
  clock_.AdvanceMs(options_.default_kv_lease_ttl_ms + 1);
  auto removed = master_->BatchRemove({"a", "b", "a"});
  EXPECT_TRUE(removed[0].ok() && removed[1].ok());
  EXPECT_EQ(removed[2].code(), StatusCode::kNotFound);
  EXPECT_EQ(master_->ListKeys("", 10).size(), 0u);
}

}  // namespace
}  // namespace crescent::store
