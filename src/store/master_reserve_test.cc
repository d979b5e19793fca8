// Reservations: the one-round-trip put (MasterCore::Reserve/BatchCommit/
// Release), with a manual clock.
#include <gtest/gtest.h>

#include <string>

#include "store/master.h"
#include "store/store_format.h"

namespace crescent::store {
namespace {

constexpr uint64_t kSeg = 1 << 20;
constexpr uint64_t kBase = 0x10000;

class ReserveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    master_ = MasterCore::Create(options_, &clock_);
    ASSERT_TRUE(master_->MountSegment("owner", SegmentSpec{"seg", kBase, kSeg}).ok());
  }
  Reservation Reserve(uint64_t size, const std::string& client = "writer") {
    auto r = master_->Reserve(client, size, size, "");
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.value_or(Reservation{});
  }
  Status Commit(const Reservation& r, const std::string& key, uint64_t at, uint64_t size,
                uint32_t crc = 7) {
    return master_->BatchCommit({CommitArgs{r.id, key, r.address + at, size, crc, false}})[0];
  }
  uint64_t Allocated() { return master_->Stats().allocated_bytes; }

  ManualClock clock_;
  MasterOptions options_;
  std::unique_ptr<MasterCore> master_;
};

TEST_F(ReserveTest, CommitPublishesAValueWhereTheWriterPutIt) {
  const Reservation r = Reserve(64 * 1024);
  EXPECT_EQ(r.segment, "seg");
  EXPECT_EQ(r.size, 64u * 1024);
  EXPECT_EQ(Allocated(), r.size);
  EXPECT_EQ(master_->Stats().reserved_bytes, r.size);

  ASSERT_TRUE(Commit(r, "a", 0, 1000, 11).ok());
  ASSERT_TRUE(Commit(r, "b", 1024, 4096, 22).ok());
  auto a = master_->GetReplicaList("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->size, 1000u);
  EXPECT_EQ(a->crc32c, 11u);
  ASSERT_EQ(a->replicas.size(), 1u);
  EXPECT_EQ(a->replicas[0].address, r.address);
  auto b = master_->GetReplicaList("b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->replicas[0].address, r.address + 1024);
  EXPECT_EQ(master_->Stats().keys, 2u);
  EXPECT_EQ(master_->Stats().reserved_bytes, r.size - 1024 - 4096);
  EXPECT_EQ(Allocated(), r.size);  // committed bytes moved, not added
}

TEST_F(ReserveTest, CommitRefusesRangesItDoesNotOwn) {
  const Reservation r = Reserve(8192);
  ASSERT_TRUE(Commit(r, "a", 0, 1000).ok());
  // Overlapping a committed value, past the end, misaligned, unknown id.
  EXPECT_EQ(Commit(r, "b", 512, 64).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(Commit(r, "b", 8192 - 64, 128).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(Commit(r, "b", 8192, 1).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(Commit(r, "b", 1030, 10).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(master_->BatchCommit({CommitArgs{r.id + 1, "b", r.address + 1024, 10, 0, false}})[0]
                .code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(master_->BatchCommit({CommitArgs{r.id, "b", r.address - 64, 10, 0, false}})[0].code(),
            StatusCode::kFailedPrecondition);
  // Bad key and empty value are the caller's mistakes.
  EXPECT_EQ(Commit(r, "", 1024, 10).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Commit(r, "b", 1024, 0).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(master_->Exist("b").value_or(true));
  // None of that hurt the reservation.
  EXPECT_TRUE(Commit(r, "b", 1024, 10).ok());
}

TEST_F(ReserveTest, CommitOfAStoredKeyLeavesTheRangeToTheWriter) {
  ASSERT_TRUE(master_->PutStart(PutStartArgs{"k", 100, 1, false, ""}).ok());
  ASSERT_TRUE(master_->PutEnd("k", 1).ok());
  const Reservation r = Reserve(4096);
  EXPECT_EQ(Commit(r, "k", 0, 100).code(), StatusCode::kAlreadyExists);
  EXPECT_TRUE(Commit(r, "other", 0, 100).ok());
}

TEST_F(ReserveTest, ReleaseFreesExactlyWhatWasNotCommitted) {
  const Reservation r = Reserve(kSeg / 2);
  ASSERT_TRUE(Commit(r, "a", 4096, 100).ok());
  ASSERT_TRUE(Commit(r, "b", 65536, 5000).ok());
  ASSERT_TRUE(master_->Release(r.id).ok());
  EXPECT_EQ(Allocated(), 128u + 5056u);
  EXPECT_EQ(master_->Stats().reservations, 0u);
  EXPECT_TRUE(master_->Exist("a").value_or(false));
  EXPECT_EQ(master_->Release(r.id).code(), StatusCode::kNotFound);
  EXPECT_EQ(Commit(r, "c", 0, 10).code(), StatusCode::kFailedPrecondition);
  // Committed values free their own ranges; then the whole segment is one
  // free block again (nothing leaked, nothing freed twice).
  ASSERT_TRUE(master_->Remove("a").ok());
  ASSERT_TRUE(master_->Remove("b").ok());
  EXPECT_EQ(Allocated(), 0u);
  EXPECT_TRUE(master_->PutStart(PutStartArgs{"all", kSeg, 1, false, ""}).ok());
}

TEST_F(ReserveTest, AValueCommittedFromALiveReservationCanBeRemovedAndItsSpaceReused) {
  const Reservation r = Reserve(kSeg / 2);
  ASSERT_TRUE(Commit(r, "a", 0, 1000).ok());
  ASSERT_TRUE(master_->Remove("a").ok());
  // The freed range is the pool's again, and the writer cannot commit it
  // twice.
  EXPECT_EQ(Commit(r, "a2", 0, 1000).code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(master_->Release(r.id).ok());
  EXPECT_EQ(Allocated(), 0u);
  EXPECT_TRUE(master_->PutStart(PutStartArgs{"all", kSeg, 1, false, ""}).ok());
}

TEST_F(ReserveTest, AnUnusedReservationIsTakenBackAfterPutTimeoutAndCommitsRenewIt) {
  const Reservation r = Reserve(8192);
  EXPECT_EQ(r.ttl_ms, options_.put_timeout_ms);
  clock_.AdvanceMs(options_.put_timeout_ms - 100);
  master_->Ping("owner");
  ASSERT_TRUE(Commit(r, "a", 0, 10).ok());  // renews
  clock_.AdvanceMs(options_.put_timeout_ms - 100);
  master_->Ping("owner");
  master_->Tick();
  EXPECT_TRUE(Commit(r, "b", 64, 10).ok());
  clock_.AdvanceMs(options_.put_timeout_ms + 1);
  master_->Ping("owner");
  master_->Tick();
  EXPECT_EQ(Commit(r, "c", 128, 10).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(Allocated(), 128u);  // a and b stay
}

TEST_F(ReserveTest, ReservationsEndWithTheirClientOrTheirSegment) {
  // A writer that expires loses its reservations; what it committed stays.
  ASSERT_TRUE(master_->MountSegment("writer", SegmentSpec{"wseg", 0x900000, kSeg}).ok());
  auto r = master_->Reserve("writer", 8192, 8192, "seg");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->segment, "seg");  // the preferred segment
  ASSERT_TRUE(Commit(*r, "kept", 0, 10).ok());
  for (int i = 0; i < 12; ++i) {
    clock_.AdvanceMs(1000);
    master_->Ping("owner");
    master_->Tick();
  }
  EXPECT_EQ(Commit(*r, "late", 64, 10).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(master_->Exist("kept").value_or(false));
  EXPECT_EQ(Allocated(), 64u);

  // A segment that leaves takes its reservations and values along.
  auto r2 = master_->Reserve("owner", 8192, 8192, "seg");
  ASSERT_TRUE(r2.ok());
  ASSERT_TRUE(master_->UnmountSegment("owner", "seg", kBase).ok());
  EXPECT_EQ(Commit(*r2, "x", 0, 10).code(), StatusCode::kFailedPrecondition);
  EXPECT_FALSE(master_->Exist("kept").value_or(true));
  EXPECT_EQ(master_->Stats().allocated_bytes, 0u);
  EXPECT_EQ(master_->Stats().reservations, 0u);
}

TEST_F(ReserveTest, ReservedSpaceIsNeverEvictedButCommittedValuesAre) {
  ASSERT_TRUE(master_->PutStart(PutStartArgs{"first", 64 * 1024, 1, false, ""}).ok());
  ASSERT_TRUE(master_->PutEnd("first", 1).ok());
  const Reservation r = Reserve(kSeg / 2);  // right after "first"
  ASSERT_TRUE(Commit(r, "old", 0, 64 * 1024).ok());
  // 448 KiB stay free behind the reservation: a 512 KiB put evicts every
  // value, committed ones included, and still fails, because the reserved
  // space is not the pool's to give.
  EXPECT_EQ(master_->PutStart(PutStartArgs{"big", kSeg / 2, 1, false, ""}).status().code(),
            StatusCode::kResourceExhausted);
  EXPECT_FALSE(master_->Exist("first").value_or(true));
  EXPECT_FALSE(master_->Exist("old").value_or(true));
  EXPECT_TRUE(Commit(r, "new", 128 * 1024, 100).ok());
  ASSERT_TRUE(master_->Release(r.id).ok());
  EXPECT_TRUE(master_->PutStart(PutStartArgs{"big", kSeg / 2, 1, false, ""}).ok());
}

TEST_F(ReserveTest, TheSegmentOwnerHearsOfCommittedValues) {
  master_->Ping("owner");  // drains the mount's events
  const Reservation r = Reserve(8192);
  ASSERT_TRUE(Commit(r, "a", 0, 100, 99).ok());
  PingResult p = master_->Ping("owner");
  ASSERT_EQ(p.events.size(), 1u);
  EXPECT_TRUE(p.events[0].added);
  EXPECT_EQ(p.events[0].object.key, "a");
  EXPECT_EQ(p.events[0].object.offset, r.address - kBase);
  EXPECT_EQ(p.events[0].object.crc32c, 99u);
}

TEST_F(ReserveTest, BadReservationsAreRefused) {
  EXPECT_EQ(master_->Reserve("", 100, 100, "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(master_->Reserve("w", 0, 0, "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(master_->Reserve("w", 100, 200, "").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(master_->Reserve("w", kSeg + 1, kSeg + 1, "").status().code(),
            StatusCode::kResourceExhausted);
}

TEST_F(ReserveTest, AReservationIsAtMostAThirtySecondOfThePoolUnlessOneValueNeedsMore) {
  auto small = master_->Reserve("w", kSeg, 4096, "");
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->size, kSeg / 32);
  auto big = master_->Reserve("w", kSeg / 2, kSeg / 4, "");
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(big->size, kSeg / 4);
}

}  // namespace
}  // namespace crescent::store
