// Two engines in one process, talking over loopback tcp or shared memory
// exactly as two processes would (sockets, memfds); metadata in memory.
// Cross-process behaviour (metadata service, kill -9) is in
// transfer_process_test.cc.
#include "transfer/transfer_engine.h"

#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "common/crc32c.h"
#include "common/testutil.h"
#include "transfer/memory_metadata.h"

namespace crescent::transfer {
namespace {

using std::chrono::milliseconds;

struct Pair {
  std::shared_ptr<MetadataStore> meta = NewInProcessMetadataStore();
  std::unique_ptr<TransferEngine> target, initiator;
  RegisteredRegion remote;              // target memory
  std::vector<uint8_t> src, dst;        // initiator memory (registered)
  SegmentHandle seg = 0;
};

std::unique_ptr<TransferEngine> MakeEngine(std::shared_ptr<MetadataStore> meta, std::string name,
                                           TransportPolicy policy) {
  TransferEngineOptions o;
  o.segment_name = std::move(name);
  o.policy = policy;
  o.transfer_timeout = milliseconds(5000);
  auto e = TransferEngine::Create(o, std::move(meta));
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return e.ok() ? std::move(e).value() : nullptr;
}

Pair MakePair(TransportPolicy policy, uint64_t remote_bytes, bool shareable_target = true) {
  Pair p;
  p.target = MakeEngine(p.meta, "target", TransportPolicy::kAuto);
  if (shareable_target) {
    auto r = p.target->AllocateSegmentMemory(remote_bytes);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    p.remote = *r;
  } else {
    static std::vector<uint8_t> plain;
    plain.assign(remote_bytes, 0);
    p.remote = *p.target->RegisterMemory(plain.data(), plain.size());
  }
  p.initiator = MakeEngine(p.meta, "initiator", policy);
  p.src.resize(remote_bytes);
  p.dst.resize(remote_bytes);
  EXPECT_TRUE(p.initiator->RegisterMemory(p.src.data(), p.src.size()).ok());
  EXPECT_TRUE(p.initiator->RegisterMemory(p.dst.data(), p.dst.size()).ok());
  auto seg = p.initiator->OpenSegment("target");
  EXPECT_TRUE(seg.ok()) << seg.status().ToString();
  p.seg = *seg;
  return p;
}

// Writes random bytes at odd offsets, checks they landed in the target's
// memory, reads them back elsewhere and compares; both directions also
// return the bytes' CRC-32C when asked.
void RoundTrips(Pair& p) {
  const uint64_t sizes[] = {1, 7, 4095, 65537, (1 << 20) + 3, 64ull << 20};
  uint64_t seed = 1;
  for (uint64_t size : sizes) {
    if (size + 5 > p.remote.length) continue;
    SCOPED_TRACE("size " + std::to_string(size));
    uint64_t local_off = 13, remote_off = p.remote.length - size - 5;
    auto data = testing::RandomBytes(size, seed++);
    std::memcpy(p.src.data() + local_off, data.data(), size);
    const uint32_t want = Crc32c(data.data(), size);
    uint32_t wrote = ~want, read = ~want;
    ASSERT_TRUE(p.initiator
                    ->Transfer({{{OpCode::kWrite, p.src.data() + local_off, p.seg,
                                  p.remote.segment_offset + remote_off, size, &wrote}}})
                    .ok());
    auto* remote = static_cast<uint8_t*>(p.remote.address) + remote_off;
    ASSERT_EQ(std::memcmp(remote, data.data(), size), 0);
    EXPECT_EQ(wrote, want);
    Status s = p.initiator->Transfer({{{OpCode::kRead, p.dst.data() + 3, p.seg,
                                        p.remote.segment_offset + remote_off, size, &read}}});
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_EQ(std::memcmp(p.dst.data() + 3, data.data(), size), 0);
    EXPECT_EQ(read, want);
  }
}

TEST(TransferEngineTest, TcpRoundTripsFrom1ByteTo64MiB) {
  Pair p = MakePair(TransportPolicy::kTcpOnly, (64 << 20) + 64);
  EXPECT_FALSE(p.initiator->GetSegmentInfo(p.seg)->shared_memory);
  RoundTrips(p);
}

TEST(TransferEngineTest, SharedMemoryRoundTripsFrom1ByteTo64MiB) {
  Pair p = MakePair(TransportPolicy::kShmOnly, (64 << 20) + 64);
  EXPECT_TRUE(p.initiator->GetSegmentInfo(p.seg)->shared_memory);
  RoundTrips(p);
}

TEST(TransferEngineTest, PlainRegisteredTargetMemoryGoesOverTcpOnOneHost) {
  Pair p = MakePair(TransportPolicy::kAuto, 1 << 20, /*shareable_target=*/false);
  RoundTrips(p);
}

void ConcurrentBatches(TransportPolicy policy) {
  Pair p = MakePair(policy, 16 << 20);
  auto data = testing::RandomBytes(16 << 20, 42);
  std::memcpy(p.src.data(), data.data(), data.size());
  // Each thread owns a quarter of the segment; many batches, many requests.
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      uint64_t base = uint64_t(t) * (4 << 20);
      for (int round = 0; round < 10; ++round) {
        auto batch = p.initiator->AllocateBatch(32);
        std::vector<TransferRequest> reqs;
        for (int i = 0; i < 32; ++i) {
          uint64_t off = base + i * (128 << 10) + rng() % 1000;
          uint64_t len = 1 + rng() % (100 << 10);
          reqs.push_back({OpCode::kWrite, p.src.data() + off, p.seg, p.remote.segment_offset + off, len});
        }
        if (!p.initiator->SubmitTransfer(*batch, reqs).ok()) failures++;
        if (!p.initiator->WaitBatch(*batch, milliseconds(10000)).ok()) failures++;
        for (size_t i = 0; i < reqs.size(); ++i)
          if (p.initiator->GetTransferStatus(*batch, i)->state != TransferState::kCompleted)
            failures++;
        if (!p.initiator->FreeBatch(*batch).ok()) failures++;
        for (auto& r : reqs) {
          r.opcode = OpCode::kRead;
          r.local = p.dst.data() + (static_cast<uint8_t*>(r.local) - p.src.data());
        }
        if (!p.initiator->Transfer(reqs).ok()) failures++;
        for (auto& r : reqs)
          if (std::memcmp(r.local, p.src.data() + (static_cast<uint8_t*>(r.local) - p.dst.data()),
                          r.length) != 0)
            failures++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(TransferEngineTest, ManyConcurrentBatchesOverTcp) { ConcurrentBatches(TransportPolicy::kTcpOnly); }
TEST(TransferEngineTest, ManyConcurrentBatchesOverSharedMemory) {
  ConcurrentBatches(TransportPolicy::kShmOnly);
}

TEST(TransferEngineTest, BadRequestsAreRejectedWithClearErrors) {
  Pair p = MakePair(TransportPolicy::kTcpOnly, 1 << 20);
  std::vector<uint8_t> unregistered(100);
  auto expect = [&](TransferRequest r, StatusCode code, std::string_view words) {
    Status s = p.initiator->Transfer({{r}});
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_NE(s.message().find(words), std::string::npos) << s.ToString();
  };
  uint64_t base = p.remote.segment_offset;
  expect({OpCode::kRead, unregistered.data(), p.seg, base, 10}, StatusCode::kInvalidArgument,
         "not inside memory registered");
  expect({OpCode::kRead, p.dst.data() + p.dst.size() - 5, p.seg, base, 10},
         StatusCode::kInvalidArgument, "not inside memory registered");
  expect({OpCode::kWrite, p.src.data(), p.seg, base + p.remote.length - 5, 10},
         StatusCode::kOutOfRange, "outside the registered buffers of segment 'target'");
  expect({OpCode::kRead, p.dst.data(), p.seg, base, 0}, StatusCode::kInvalidArgument,
         "length is 0");
  expect({OpCode::kRead, p.dst.data(), 999, base, 1}, StatusCode::kInvalidArgument,
         "not open");
  auto missing = p.initiator->OpenSegment("nobody");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("crescent/segments/nobody"), std::string::npos);
  auto batch = p.initiator->AllocateBatch(1);
  TransferRequest ok{OpCode::kRead, p.dst.data(), p.seg, base, 1};
  ASSERT_TRUE(p.initiator->SubmitTransfer(*batch, {{ok}}).ok());
  EXPECT_EQ(p.initiator->SubmitTransfer(*batch, {{ok}}).code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(p.initiator->WaitBatch(*batch, milliseconds(5000)).ok());
  EXPECT_EQ(p.initiator->GetTransferStatus(*batch, 1).status().code(), StatusCode::kOutOfRange);
}

TEST(TransferEngineTest, UnregisteredTargetMemoryIsNoLongerReachable) {
  for (auto policy : {TransportPolicy::kTcpOnly, TransportPolicy::kShmOnly}) {
    Pair p = MakePair(policy, 1 << 20);
    TransferRequest r{OpCode::kWrite, p.src.data(), p.seg, p.remote.segment_offset, 4096};
    ASSERT_TRUE(p.initiator->Transfer({{r}}).ok());
    ASSERT_TRUE(p.target->FreeSegmentMemory(p.remote.address).ok());
    Status s = p.initiator->Transfer({{r}});
    EXPECT_FALSE(s.ok());
    EXPECT_TRUE(s.code() == StatusCode::kOutOfRange || s.code() == StatusCode::kNotFound)
        << s.ToString();
  }
}

// The initiator's copy of the descriptor still lists a region the target
// has freed: the target refuses those requests in the middle of pipelined
// bursts, the others in the same bursts land intact.
TEST(TransferEngineTest, TargetRefusesRequestsFromAStaleDescriptorMidBurst) {
  auto meta = NewInProcessMetadataStore();
  auto target = MakeEngine(meta, "target", TransportPolicy::kAuto);
  auto keep = *target->AllocateSegmentMemory(1 << 20);
  auto gone = *target->AllocateSegmentMemory(1 << 20);
  TransferEngineOptions o;
  o.segment_name = "initiator";
  o.policy = TransportPolicy::kTcpOnly;
  o.connections_per_peer = 1;  // one connection: the requests travel in bursts
  auto initiator = *TransferEngine::Create(o, meta);
  auto src = testing::RandomBytes(1 << 20, 5);
  std::vector<uint8_t> dst(1 << 20);
  ASSERT_TRUE(initiator->RegisterMemory(src.data(), src.size()).ok());
  ASSERT_TRUE(initiator->RegisterMemory(dst.data(), dst.size()).ok());
  auto seg = *initiator->OpenSegment("target");
  ASSERT_TRUE(target->FreeSegmentMemory(gone.address).ok());

  for (OpCode op : {OpCode::kWrite, OpCode::kRead}) {
    std::vector<TransferRequest> reqs;
    for (int i = 0; i < 40; ++i) {
      bool stale = i % 7 == 3;
      uint64_t off = i * 1000 + 1;
      uint8_t* local = (op == OpCode::kWrite ? src.data() : dst.data()) + off;
      reqs.push_back({op, local, seg, (stale ? gone : keep).segment_offset + off, 1000});
    }
    auto batch = *initiator->AllocateBatch(reqs.size());
    ASSERT_TRUE(initiator->SubmitTransfer(batch, reqs).ok());
    EXPECT_EQ(initiator->WaitBatch(batch, milliseconds(5000)).code(), StatusCode::kOutOfRange);
    for (int i = 0; i < 40; ++i) {
      auto st = *initiator->GetTransferStatus(batch, i);
      uint64_t off = i * 1000 + 1;
      if (i % 7 == 3) {
        EXPECT_EQ(st.state, TransferState::kFailed);
        EXPECT_NE(st.error.message().find("not inside one registered region"), std::string::npos)
            << st.error.ToString();
      } else {
        ASSERT_EQ(st.state, TransferState::kCompleted) << i << " " << st.error.ToString();
        const uint8_t* got = op == OpCode::kWrite ? static_cast<uint8_t*>(keep.address) + off
                                                  : dst.data() + off;
        EXPECT_EQ(std::memcmp(got, src.data() + off, 1000), 0) << i;
      }
    }
    ASSERT_TRUE(initiator->FreeBatch(batch).ok());
  }
}

TEST(TransferEngineTest, OwnSegmentIsReachableByMemcpy) {
  auto meta = NewInProcessMetadataStore();
  auto e = MakeEngine(meta, "self", TransportPolicy::kAuto);
  auto region = *e->AllocateSegmentMemory(1 << 20);
  std::vector<uint8_t> buf(1000, 7);
  ASSERT_TRUE(e->RegisterMemory(buf.data(), buf.size()).ok());
  auto seg = *e->OpenSegment("self");
  uint32_t crc = 0;
  ASSERT_TRUE(
      e->Transfer({{{OpCode::kWrite, buf.data(), seg, region.segment_offset + 9, 1000, &crc}}}).ok());
  EXPECT_EQ(static_cast<uint8_t*>(region.address)[9 + 999], 7);
  EXPECT_EQ(crc, Crc32c(buf.data(), buf.size()));
  auto* base = static_cast<uint8_t*>(region.address);
  crc = 0;
  ASSERT_TRUE(
      e->Transfer({{{OpCode::kRead, buf.data(), seg, region.segment_offset + 9, 1000, &crc}}}).ok());
  EXPECT_EQ(crc, Crc32c(base + 9, 1000));
}

TEST(TransferEngineTest, RequestsToAStoppedPeerFailFast) {
  for (auto policy : {TransportPolicy::kTcpOnly, TransportPolicy::kShmOnly}) {
    Pair p = MakePair(policy, 1 << 20);
    TransferRequest r{OpCode::kRead, p.dst.data(), p.seg, p.remote.segment_offset, 4096};
    ASSERT_TRUE(p.initiator->Transfer({{r}}).ok());
    p.target.reset();
    auto start = std::chrono::steady_clock::now();
    Status s = p.initiator->Transfer({{r}});
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  }
}

TEST(TransferEngineTest, RdmaIsRefusedWithAMessage) {
  MooncakeConfig c;
  c.protocol = "rdma";
  auto o = TransferEngineOptionsFromConfig(c, "x");
  ASSERT_FALSE(o.ok());
  EXPECT_NE(o.status().message().find("no RDMA transport"), std::string::npos);
}

}  // namespace
}  // namespace crescent::transfer
