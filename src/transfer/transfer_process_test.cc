// The transfer engine against real processes: `crescent metadata-server`
// (or a real etcd / redis) for metadata and `crescent transfer-bench --mode
// target` processes serving segments; the test process is the initiator.
#include <signal.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "common/testutil.h"
#include "transfer/metadata/metadata.h"
#include "transfer/transfer_engine.h"

namespace crescent::transfer {
namespace {

using std::chrono::milliseconds;
using testing::CrescentBin;
using testing::Subprocess;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kTargetBytes = (64 << 20) + (1 << 20);

struct MetadataServer {
  uint16_t port = testing::FreePort();
  Subprocess proc{{CrescentBin(), "metadata-server", "--host", "127.0.0.1", "--port",
                   std::to_string(port)}};
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port) + "/metadata"; }
  bool ok() { return testing::WaitForPort(port, std::chrono::seconds(10)); }
};

std::unique_ptr<Subprocess> StartTarget(const std::string& metadata, const std::string& name) {
  return std::make_unique<Subprocess>(std::vector<std::string>{
      CrescentBin(), "transfer-bench", "--mode", "target", "--metadata-server", metadata,
      "--segment-id", name, "--buffer-size", std::to_string(kTargetBytes)});
}

struct Initiator {
  std::unique_ptr<TransferEngine> engine;
  std::vector<uint8_t> src, dst;

  Initiator(const std::string& metadata, TransportPolicy policy, milliseconds timeout = milliseconds(5000)) {
    auto spec = ParseMetadataServer(metadata);
    EXPECT_TRUE(spec.ok()) << spec.status().ToString();
    auto store = OpenMetadataStore(*spec);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    TransferEngineOptions o;
    o.segment_name = "test-initiator-" + std::to_string(getpid()) + "-" + std::to_string(int(policy));
    o.policy = policy;
    o.transfer_timeout = timeout;
    auto e = TransferEngine::Create(o, std::shared_ptr<MetadataStore>(std::move(store).value()));
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    engine = std::move(e).value();
    src.resize(kTargetBytes);
    dst.resize(kTargetBytes);
    EXPECT_TRUE(engine->RegisterMemory(src.data(), src.size()).ok());
    EXPECT_TRUE(engine->RegisterMemory(dst.data(), dst.size()).ok());
  }

  // Opens `name`, waiting for its process to publish it with its memory
  // (a target publishes its segment before it allocates the buffer).
  SegmentHandle Open(const std::string& name, Subprocess& proc) {
    auto deadline = Clock::now() + std::chrono::seconds(20);
    auto published = [&](const StatusOr<SegmentHandle>& s) {
      if (!s.ok()) return false;
      auto info = engine->GetSegmentInfo(*s);
      if (info.ok() && !info->regions.empty()) return true;
      engine->CloseSegment(*s).IgnoreError();
      return false;
    };
    auto seg = engine->OpenSegment(name);
    while (!published(seg) && Clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(50));
      seg = engine->OpenSegment(name);
    }
    if (!seg.ok()) proc.DumpLog();
    EXPECT_TRUE(seg.ok()) << seg.status().ToString();
    return seg.value_or(0);
  }
};

// Random bytes out and back at odd offsets, 1 B to 64 MiB.
void RoundTrips(Initiator& in, SegmentHandle seg) {
  auto info = in.engine->GetSegmentInfo(seg);
  ASSERT_TRUE(info.ok());
  ASSERT_FALSE(info->regions.empty());
  uint64_t base = info->regions[0].segment_offset;
  uint64_t seed = 7;
  for (uint64_t size : {1ull, 3ull, 4097ull, 65535ull, (1ull << 20) + 1, 64ull << 20}) {
    SCOPED_TRACE("size " + std::to_string(size));
    auto data = testing::RandomBytes(size, seed++);
    std::memcpy(in.src.data() + 11, data.data(), size);
    uint64_t remote = base + 1 + (seed * 4099) % (kTargetBytes - size - 1);
    Status w = in.engine->Transfer({{{OpCode::kWrite, in.src.data() + 11, seg, remote, size}}});
    ASSERT_TRUE(w.ok()) << w.ToString();
    Status r = in.engine->Transfer({{{OpCode::kRead, in.dst.data() + 5, seg, remote, size}}});
    ASSERT_TRUE(r.ok()) << r.ToString();
    ASSERT_EQ(std::memcmp(in.dst.data() + 5, data.data(), size), 0);
  }
}

TEST(TransferProcessTest, RoundTripsWithAnotherProcessOverTcpAndSharedMemory) {
  MetadataServer meta;
  ASSERT_TRUE(meta.ok());
  auto target = StartTarget(meta.url(), "target-a");
  for (auto policy : {TransportPolicy::kTcpOnly, TransportPolicy::kShmOnly}) {
    Initiator in(meta.url(), policy);
    SegmentHandle seg = in.Open("target-a", *target);
    EXPECT_EQ(in.engine->GetSegmentInfo(seg)->shared_memory, policy == TransportPolicy::kShmOnly);
    RoundTrips(in, seg);
  }
}

TEST(TransferProcessTest, BadRequestsToAnotherProcessGetClearErrors) {
  MetadataServer meta;
  ASSERT_TRUE(meta.ok());
  auto target = StartTarget(meta.url(), "target-b");
  Initiator in(meta.url(), TransportPolicy::kTcpOnly);
  SegmentHandle seg = in.Open("target-b", *target);
  Status s = in.engine->Transfer({{{OpCode::kRead, in.dst.data(), seg, kTargetBytes - 10, 20}}});
  EXPECT_EQ(s.code(), StatusCode::kOutOfRange) << s.ToString();
  EXPECT_NE(s.message().find("target-b"), std::string::npos) << s.ToString();
  auto none = in.engine->OpenSegment("no-such-segment");
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
}

// Streams verified batches to two targets, kills one with SIGKILL midway:
// its requests fail within a bounded time, the other's keep succeeding.
void KillOnePeer(TransportPolicy policy) {
  MetadataServer meta;
  ASSERT_TRUE(meta.ok());
  auto victim = StartTarget(meta.url(), "victim");
  auto survivor = StartTarget(meta.url(), "survivor");
  Initiator in(meta.url(), policy, milliseconds(3000));
  SegmentHandle segs[2] = {in.Open("victim", *victim), in.Open("survivor", *survivor)};

  std::atomic<bool> stop{false};
  std::atomic<int64_t> killed_at_ns{0};
  struct Outcome {
    int ok_after_kill = 0, failed = 0, wrong_data = 0;
    Clock::duration first_failure_after_kill{};
    bool hung = false;
    std::string error;
  } outcome[2];
  auto stream = [&](int which) {
    Outcome& out = outcome[which];
    const uint64_t block = 256 << 10, n = 16, half = kTargetBytes / 2;
    uint8_t* src = in.src.data() + which * half;
    uint8_t* dst = in.dst.data() + which * half;
    for (uint64_t round = 0; !stop; ++round) {
      auto data = testing::RandomBytes(block * n, round * 2 + which);
      std::memcpy(src, data.data(), data.size());
      std::vector<TransferRequest> reqs;
      for (uint64_t i = 0; i < n; ++i)
        reqs.push_back({OpCode::kWrite, src + i * block, segs[which], i * block, block});
      auto batch = in.engine->AllocateBatch(2 * n);
      Status s = in.engine->SubmitTransfer(*batch, reqs);
      if (s.ok()) s = in.engine->WaitBatch(*batch, milliseconds(15000));
      if (s.ok()) {
        for (auto& r : reqs) {
          r.opcode = OpCode::kRead;
          r.local = dst + (static_cast<uint8_t*>(r.local) - src);
        }
        s = in.engine->SubmitTransfer(*batch, reqs);
        if (s.ok()) s = in.engine->WaitBatch(*batch, milliseconds(15000));
      }
      if (s.code() == StatusCode::kDeadlineExceeded && s.message().find("still pending") != std::string::npos)
        out.hung = true;
      in.engine->FreeBatch(*batch).IgnoreError();
      int64_t k = killed_at_ns.load();
      if (s.ok()) {
        if (std::memcmp(dst, data.data(), data.size()) != 0) out.wrong_data++;
        if (k) out.ok_after_kill++;
      } else {
        if (out.failed++ == 0) {
          out.error = s.ToString();
          if (k) out.first_failure_after_kill = Clock::now().time_since_epoch() - std::chrono::nanoseconds(k);
        }
        if (out.hung) return;
        std::this_thread::sleep_for(milliseconds(20));
      }
    }
  };
  std::thread t0(stream, 0), t1(stream, 1);
  std::this_thread::sleep_for(milliseconds(400));
  killed_at_ns = Clock::now().time_since_epoch().count();
  victim->Signal(SIGKILL);
  std::this_thread::sleep_for(milliseconds(1500));
  stop = true;
  t0.join();
  t1.join();

  EXPECT_FALSE(outcome[0].hung);
  EXPECT_FALSE(outcome[1].hung);
  EXPECT_GT(outcome[0].failed, 0) << "requests to the killed peer kept succeeding";
  EXPECT_LT(outcome[0].first_failure_after_kill, std::chrono::seconds(4)) << outcome[0].error;
  EXPECT_EQ(outcome[0].wrong_data, 0);
  EXPECT_EQ(outcome[1].failed, 0) << outcome[1].error;
  EXPECT_EQ(outcome[1].wrong_data, 0);
  EXPECT_GT(outcome[1].ok_after_kill, 0) << "the other peer stopped too";
  std::cerr << "victim: first failure " << std::chrono::duration<double, std::milli>(outcome[0].first_failure_after_kill).count()
            << " ms after the kill: " << outcome[0].error << "\n";
}

TEST(TransferProcessTest, PeerKilledMidTransferOverTcpFailsItsRequestsOnly) {
  KillOnePeer(TransportPolicy::kTcpOnly);
}

TEST(TransferProcessTest, PeerKilledMidTransferOverSharedMemoryFailsItsRequestsOnly) {
  KillOnePeer(TransportPolicy::kShmOnly);
}

void RoundTripOver(const std::string& metadata) {
  auto target = StartTarget(metadata, "target-kv");
  Initiator in(metadata, TransportPolicy::kAuto);
  SegmentHandle seg = in.Open("target-kv", *target);
  auto data = testing::RandomBytes(3 << 20, 99);
  std::memcpy(in.src.data() + 1, data.data(), data.size());
  ASSERT_TRUE(in.engine->Transfer({{{OpCode::kWrite, in.src.data() + 1, seg, 17, data.size()}}}).ok());
  ASSERT_TRUE(in.engine->Transfer({{{OpCode::kRead, in.dst.data() + 2, seg, 17, data.size()}}}).ok());
  EXPECT_EQ(std::memcmp(in.dst.data() + 2, data.data(), data.size()), 0);
}

TEST(TransferProcessTest, SegmentsPublishedInEtcd) {
  testing::EtcdServer etcd;
  ASSERT_TRUE(etcd.ok());
  RoundTripOver("etcd://" + etcd.endpoint());
}

TEST(TransferProcessTest, SegmentsPublishedInRedis) {
  testing::RedisServer redis;
  ASSERT_TRUE(redis.ok());
  RoundTripOver("redis://127.0.0.1:" + std::to_string(redis.port()));
}

}  // namespace
}  // namespace crescent::transfer
