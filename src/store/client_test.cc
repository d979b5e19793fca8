// Store clients against a real master (gRPC on loopback) and real transfer
// engines; several clients in one process sharing an in-process metadata
// store. Cross-process behaviour (kill -9, separate processes) is in
// store_process_test.cc.
#include "store/client.h"

#include <gtest/gtest.h>

#include <thread>

#include "common/testutil.h"
#include "store/master_client.h"
#include "store/master_server.h"
#include "transfer/memory_metadata.h"

namespace crescent::store {
namespace {

using crescent::testing::RandomBytes;

class ClientTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    metadata_ = transfer::NewInProcessMetadataStore();
    StartMaster(0);
  }

  void StartMaster(uint16_t port) {
    MasterServerOptions o;
    o.host = "127.0.0.1";
    o.port = port;
    o.metrics_port = 0;
    o.master.default_kv_lease_ttl_ms = 300;
    auto m = MasterServer::Start(o);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    master_ = std::move(*m);
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(master_->port()); }

  std::unique_ptr<Client> NewClient(uint64_t segment, uint64_t local_buffer = 8 << 20) {
    ClientOptions o;
    o.config.master_server_address = address();
    o.config.global_segment_size = segment;
    o.config.local_buffer_size = local_buffer;
    o.metadata = metadata_;
    o.tcp_only = GetParam();
    o.ping_interval = std::chrono::milliseconds(100);
    o.transfer_timeout = std::chrono::milliseconds(3000);
    auto c = Client::Create(o);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }

  std::shared_ptr<transfer::MetadataStore> metadata_;
  std::unique_ptr<MasterServer> master_;
};

TEST_P(ClientTest, PutInOneClientGetFromOthers) {
  auto a = NewClient(16 << 20);
  auto b = NewClient(16 << 20);
  auto reader = NewClient(0);
  ASSERT_TRUE(a && b && reader);
  for (uint64_t size : {1ull, 100ull, 4096ull, 300000ull, 3ull << 20}) {
    const std::string key = "obj/" + std::to_string(size);
    auto value = RandomBytes(size, size);
    ASSERT_TRUE(a->Put(key, value).ok()) << key;
    for (Client* c : {a.get(), b.get(), reader.get()}) {
      auto got = c->Get(key);
      ASSERT_TRUE(got.ok()) << key << ": " << got.status().ToString();
      EXPECT_EQ(*got, value) << key;
    }
  }
  // The writer's own segment holds the copy (preferred).
  auto info = a->master().QueryKey("obj/100");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->replicas[0].segment, a->segment_name());
  EXPECT_EQ(a->Put("obj/100", RandomBytes(5, 1)).code(), StatusCode::kAlreadyExists);
}

TEST_P(ClientTest, ZeroCopyAndBatches) {
  auto holder = NewClient(32 << 20);
  auto c = NewClient(0);
  ASSERT_TRUE(holder && c);
  std::vector<uint8_t> src = RandomBytes(1 << 20, 3), dst(1 << 20);
  ASSERT_TRUE(c->RegisterBuffer(src.data(), src.size()).ok());
  ASSERT_TRUE(c->RegisterBuffer(dst.data(), dst.size()).ok());
  ASSERT_TRUE(c->PutFrom("z", {src.data(), src.size()}).ok());
  auto n = c->GetInto("z", {dst.data(), dst.size()});
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(*n, src.size());
  EXPECT_EQ(dst, src);
  EXPECT_EQ(c->GetInto("z", {dst.data(), 100}).status().code(), StatusCode::kOutOfRange);

  std::vector<std::string> keys;
  std::vector<std::vector<uint8_t>> values;
  std::vector<std::span<const uint8_t>> spans;
  for (int i = 0; i < 20; ++i) {
    keys.push_back("batch/" + std::to_string(i));
    values.push_back(RandomBytes(1000 + i * 5000, 100 + i));
  }
  for (auto& v : values) spans.push_back(v);
  keys.push_back("");  // one bad item fails alone
  spans.push_back(values[0]);
  auto put = c->BatchPut(keys, spans);
  for (int i = 0; i < 20; ++i) EXPECT_TRUE(put[i].ok()) << i << put[i].ToString();
  EXPECT_EQ(put[20].code(), StatusCode::kInvalidArgument);
  keys.back() = "batch/missing";
  auto got = c->BatchGet(keys);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status().ToString();
    EXPECT_EQ(*got[i], values[i]);
  }
  EXPECT_EQ(got[20].status().code(), StatusCode::kNotFound);
  auto exist = c->BatchExist({"batch/3", "batch/missing"});
  ASSERT_TRUE(exist.ok());
  EXPECT_EQ(*exist, (std::vector<bool>{true, false}));
}

TEST_P(ClientTest, ScatterReadsFillPiecesInOrder) {
  auto holder = NewClient(32 << 20);
  auto c = NewClient(0);
  ASSERT_TRUE(holder && c);
  const auto value = RandomBytes(3 * 65536, 5);
  ASSERT_TRUE(c->Put("s", value).ok());
  // Three pieces at scattered, out-of-order places of one registered region
  // (like the blocks of a paged KV cache).
  std::vector<uint8_t> pool(8 * 65536, 0);
  ASSERT_TRUE(c->RegisterBuffer(pool.data(), pool.size()).ok());
  std::vector<MutableBuffer> pieces = {{pool.data() + 5 * 65536, 65536},
                                       {pool.data() + 1 * 65536, 65536},
                                       {pool.data() + 7 * 65536, 65536}};
  auto got = c->BatchGetIntoScatter({"s"}, {pieces});
  ASSERT_TRUE(got[0].ok()) << got[0].status().ToString();
  EXPECT_EQ(*got[0], value.size());
  EXPECT_TRUE(std::equal(value.begin(), value.begin() + 65536, pool.begin() + 5 * 65536));
  EXPECT_TRUE(std::equal(value.begin() + 65536, value.begin() + 131072, pool.begin() + 65536));
  EXPECT_TRUE(std::equal(value.begin() + 131072, value.end(), pool.begin() + 7 * 65536));
  // Pieces that do not add up to the value, unregistered memory, no such key.
  std::vector<uint8_t> loose(65536);
  auto bad = c->BatchGetIntoScatter(
      {"s", "s", "none"},
      {{pieces[0]}, {pieces[0], pieces[1], {loose.data(), loose.size()}}, pieces});
  EXPECT_EQ(bad[0].status().code(), StatusCode::kInvalidArgument) << bad[0].status().ToString();
  EXPECT_EQ(bad[1].status().code(), StatusCode::kOutOfRange) << bad[1].status().ToString();
  EXPECT_EQ(bad[2].status().code(), StatusCode::kNotFound) << bad[2].status().ToString();
}

TEST_P(ClientTest, ChecksumMismatchIsAnErrorNeverBytes) {
  auto holder = NewClient(4 << 20);
  auto c = NewClient(0);
  ASSERT_TRUE(holder && c);
  ASSERT_TRUE(c->Put("good", RandomBytes(5000, 9)).ok());
  // A writer that publishes bytes that do not match its checksum.
  auto raw = MasterClient::Create(address());
  ASSERT_TRUE(raw->PutStart({"liar", 5000, 1, false, ""}).ok());
  ASSERT_TRUE(raw->PutEnd("liar", 0x12345678).ok());
  auto got = c->Get("liar");
  EXPECT_EQ(got.status().code(), StatusCode::kDataLoss) << got.status().ToString();
  EXPECT_TRUE(c->Get("good").ok());
}

TEST_P(ClientTest, BadInputsGetClearErrors) {
  auto holder = NewClient(1 << 20);
  auto c = NewClient(0, 4 << 20);
  ASSERT_TRUE(holder && c);
  auto v = RandomBytes(10, 1);
  EXPECT_EQ(c->Put("", v).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Put(std::string(5000, 'k'), v).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Put("empty", {}).code(), StatusCode::kInvalidArgument);
  Status big = c->Put("big", RandomBytes(2 << 20, 2));
  EXPECT_EQ(big.code(), StatusCode::kResourceExhausted) << big.ToString();
  EXPECT_NE(big.message().find("larger than every segment"), std::string::npos) << big.message();
  EXPECT_EQ(c->Get("never").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(c->Remove("never").code(), StatusCode::kNotFound);
  // Nothing half-written is left behind by the failures.
  EXPECT_EQ(c->master().Health()->stats.allocated_bytes, 0u);
}

TEST_P(ClientTest, EvictionUnderPressureKeepsServingRecentObjects) {
  auto holder = NewClient(4 << 20);
  auto c = NewClient(0);
  ASSERT_TRUE(holder && c);
  // 3x the pool in 256 KiB objects: old ones are evicted, never a failure.
  for (int i = 0; i < 48; ++i) {
    ASSERT_TRUE(c->Put("p/" + std::to_string(i), RandomBytes(256 << 10, i)).ok()) << i;
  }
  auto last = c->Get("p/47");
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(*last, RandomBytes(256 << 10, 47));
  EXPECT_EQ(c->Get("p/0").status().code(), StatusCode::kNotFound);
  auto h = c->master().Health();
  EXPECT_LE(h->stats.allocated_bytes, h->stats.total_bytes);
}

TEST_P(ClientTest, ReplicasSurviveTheLossOfOneHolder) {
  auto a = NewClient(4 << 20);
  auto b = NewClient(4 << 20);
  auto c = NewClient(0);
  ASSERT_TRUE(a && b && c);
  PutOptions two;
  two.replica_num = 2;
  auto v = RandomBytes(70000, 5);
  ASSERT_TRUE(c->Put("r", v, two).ok());
  EXPECT_EQ(c->master().QueryKey("r")->replicas.size(), 2u);
  a.reset();  // unmounts: one copy left
  auto got = c->Get("r");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, v);
  b.reset();
  EXPECT_EQ(c->Get("r").status().code(), StatusCode::kNotFound);
}

TEST_P(ClientTest, MasterRestartReRegistersHeldObjects) {
  auto holder = NewClient(8 << 20);
  auto c = NewClient(0);
  ASSERT_TRUE(holder && c);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(c->Put("keep/" + std::to_string(i), RandomBytes(10000, i)).ok());
  }
  // Wait until the holder has heard of all of them (next pings).
  for (int i = 0; i < 50 && holder->held_objects() < 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(holder->held_objects(), 10u);
  const uint16_t port = master_->port();
  master_.reset();
  StartMaster(port);
  EXPECT_FALSE(master_->core().Exist("keep/0").value_or(true));
  for (int i = 0; i < 100 && master_->core().Stats().keys < 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (int i = 0; i < 10; ++i) {
    auto got = c->Get("keep/" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << i << ": " << got.status().ToString();
    EXPECT_EQ(*got, RandomBytes(10000, i));
  }
  // The writer's reservation died with the old master: its next puts still
  // succeed (the first may find out by a refused commit and go two-phase).
  for (int i = 0; i < 3; ++i) {
    Status s = c->Put("after/" + std::to_string(i), RandomBytes(5000, 100 + i));
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(*c->Get("after/" + std::to_string(i)), RandomBytes(5000, 100 + i));
  }
}

TEST_P(ClientTest, ValuesPutThroughAReservationOutliveTheWriterWhoseReservationIsReturned) {
  auto holder = NewClient(8 << 20);
  auto writer = NewClient(0);
  auto reader = NewClient(0);
  ASSERT_TRUE(holder && writer && reader);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(writer->Put("r/" + std::to_string(i), RandomBytes(10000, i)).ok());
  }
  MasterStats during = master_->core().Stats();
  EXPECT_EQ(during.reservations, 1u);  // one range served all 20 puts
  EXPECT_GT(during.reserved_bytes, 0u);
  auto commits = [&] {
    auto m = master_->RenderMetrics();
    auto at = m.find("crescent_master_rpc_items_total{method=\"Commit\"} ");
    return at == std::string::npos ? -1 : std::stol(m.substr(at + 48));
  };
  EXPECT_EQ(commits(), 20);
  writer.reset();
  MasterStats after = master_->core().Stats();
  EXPECT_EQ(after.reservations, 0u);
  EXPECT_EQ(after.reserved_bytes, 0u);
  EXPECT_EQ(after.allocated_bytes, 20u * 10048u);  // the values, nothing else
  for (int i = 0; i < 20; ++i) {
    auto got = reader->Get("r/" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, RandomBytes(10000, i));
  }
}

TEST_P(ClientTest, MasterDownIsUnavailable) {
  auto holder = NewClient(1 << 20);
  ASSERT_TRUE(holder);
  master_.reset();
  Status s = holder->Put("x", RandomBytes(10, 1));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_EQ(holder->Get("x").status().code(), StatusCode::kUnavailable);
}

INSTANTIATE_TEST_SUITE_P(Transports, ClientTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "tcp" : "auto"; });

}  // namespace
}  // namespace crescent::store
