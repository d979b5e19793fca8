// `crescent master` as a real process, driven through MasterClient.
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "common/http.h"
#include "common/testutil.h"
#include "store/fast_wire.h"
#include "store/master_client.h"
#include "store/master_fast_client.h"
#include "store/master_server.h"
#include "transfer/net_util.h"

namespace crescent::store {
namespace {

using crescent::testing::CrescentBin;
using crescent::testing::FreePort;
using crescent::testing::Subprocess;
using crescent::testing::TempDir;
using crescent::testing::WaitForPort;

struct MasterProcess {
  explicit MasterProcess(std::vector<std::string> extra = {}) {
    port = FreePort();
    metrics_port = FreePort();
    std::vector<std::string> argv = {CrescentBin(), "master", "--port", std::to_string(port),
                                     "--metrics-port", std::to_string(metrics_port)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proc = std::make_unique<Subprocess>(argv);
    ready = WaitForPort(port, std::chrono::seconds(10));
    if (!ready) proc->DumpLog();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  uint16_t port = 0;
  uint16_t metrics_port = 0;
  std::unique_ptr<Subprocess> proc;
  bool ready = false;
};

// gRPC alone: the full API, as clients without the fast port see it.
MasterClientOptions GrpcOnly() {
  MasterClientOptions o;
  o.use_fast_port = false;
  return o;
}

TEST(MasterServerTest, ServesTheObjectLifecycleOverGrpc) {
  MasterProcess m;
  ASSERT_TRUE(m.ready);
  auto c = MasterClient::Create(m.address(), GrpcOnly());
  ASSERT_TRUE(c->MountSegment("c1", {"seg", 4096, 1 << 20}).ok());
  auto reps = c->PutStart({"k", 100, 1, false, ""});
  ASSERT_TRUE(reps.ok()) << reps.status().ToString();
  EXPECT_EQ((*reps)[0].segment, "seg");
  EXPECT_GE((*reps)[0].address, 4096u);
  ASSERT_TRUE(c->PutEnd("k", 77).ok());
  auto info = c->GetReplicaList("k");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->crc32c, 77u);
  EXPECT_EQ(c->GetReplicaList("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(c->PutStart({"", 1, 1, false, ""}).status().code(), StatusCode::kInvalidArgument);
  auto batch = c->BatchExist({"k", "nope"});
  ASSERT_TRUE(batch.ok());
  EXPECT_TRUE(*(*batch)[0]);
  EXPECT_FALSE(*(*batch)[1]);
  auto health = c->Health();
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->stats.keys, 1u);
  EXPECT_EQ(health->stats.total_bytes, 1u << 20);
  auto keys = c->ListKeys("", 10);
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(*keys, std::vector<std::string>{"k"});
}

TEST(MasterServerTest, HttpServesMetricsHealthKeysAndSegments) {
  MasterProcess m;
  ASSERT_TRUE(m.ready);
  ASSERT_TRUE(WaitForPort(m.metrics_port, std::chrono::seconds(5)));
  auto c = MasterClient::Create(m.address(), GrpcOnly());
  ASSERT_TRUE(c->MountSegment("c1", {"seg", 0, 1 << 20}).ok());
  ASSERT_TRUE(c->PutStart({"a/b c", 100, 1, false, ""}).ok());
  ASSERT_TRUE(c->PutEnd("a/b c", 0xabcdef01).ok());
  EXPECT_EQ(c->GetReplicaList("missing").status().code(), StatusCode::kNotFound);
  http::Client h("127.0.0.1", m.metrics_port);
  auto metrics = h.Get("/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status().ToString();
  EXPECT_EQ(metrics->status, 200);
  for (const char* line : {"crescent_master_keys 1", "crescent_master_total_bytes 1048576",
                           "crescent_master_allocated_bytes 128", "crescent_master_active_clients 1",
                           "crescent_master_rpc_requests_total{method=\"PutStart\"} 1",
                           "crescent_master_rpc_failures_total{method=\"GetReplicaList\"} 1",
                           "crescent_master_evicted_objects_total 0"}) {
    EXPECT_NE(metrics->body.find(line), std::string::npos) << line << "\n" << metrics->body;
  }
  auto health = h.Get("/health");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->status, 200);
  auto key = h.Get("/query_key?key=" + http::UrlEncode("a/b c"));
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(key->status, 200);
  EXPECT_NE(key->body.find("\"crc32c\":\"abcdef01\""), std::string::npos) << key->body;
  EXPECT_NE(key->body.find("\"segment\":\"seg\""), std::string::npos) << key->body;
  EXPECT_EQ(h.Get("/query_key?key=nope")->status, 404);
  EXPECT_EQ(h.Get("/query_key")->status, 400);
  auto segs = h.Get("/segments");
  ASSERT_TRUE(segs.ok());
  EXPECT_NE(segs->body.find("\"owner\":\"c1\""), std::string::npos) << segs->body;
}

TEST(MasterServerTest, HotCallsAndReservationsGoOverTheFastPort) {
  MasterProcess m;
  ASSERT_TRUE(m.ready);
  auto c = MasterClient::Create(m.address());
  ASSERT_TRUE(c->MountSegment("c1", {"seg", 4096, 1 << 20}).ok());
  auto health = c->Health();
  ASSERT_TRUE(health.ok());
  EXPECT_NE(health->fast_port, 0);
  // The same lifecycle as over gRPC, with the same outcomes.
  auto reps = c->PutStart({"k", 100, 1, false, ""});
  ASSERT_TRUE(reps.ok()) << reps.status().ToString();
  EXPECT_TRUE(c->using_fast_port());
  EXPECT_EQ((*reps)[0].segment, "seg");
  ASSERT_TRUE(c->PutEnd("k", 77).ok());
  auto info = c->GetReplicaList("k");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->crc32c, 77u);
  EXPECT_EQ(info->replicas[0].address, (*reps)[0].address);
  EXPECT_GT(info->lease_ms, 0);
  EXPECT_EQ(c->GetReplicaList("nope").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(c->PutStart({"", 1, 1, false, ""}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c->PutStart({"k", 1, 1, false, ""}).status().code(), StatusCode::kAlreadyExists);
  auto batch = c->BatchExist({"k", "nope"});
  ASSERT_TRUE(batch.ok());
  EXPECT_TRUE(*(*batch)[0]);
  EXPECT_FALSE(*(*batch)[1]);
  // A reservation, two values committed into it, the rest released.
  auto r = c->Reserve("c1", 8192, 8192, "seg");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto done = c->BatchCommit({{r->id, "r1", r->address, 10, 1, false},
                              {r->id, "k", r->address + 64, 10, 2, false},
                              {r->id, "r2", r->address + 128, 10, 3, false}});
  ASSERT_TRUE(done.ok());
  EXPECT_TRUE((*done)[0].ok());
  EXPECT_EQ((*done)[1].code(), StatusCode::kAlreadyExists);
  EXPECT_TRUE((*done)[2].ok());
  EXPECT_TRUE(c->Release(r->id).ok());
  EXPECT_EQ(c->Release(r->id).code(), StatusCode::kNotFound);
  EXPECT_EQ(c->GetReplicaList("r2")->crc32c, 3u);
  ASSERT_TRUE(c->Remove("r1").ok());
  EXPECT_EQ(c->Health()->stats.allocated_bytes, 128u + 64u);

  http::Client h("127.0.0.1", m.metrics_port);
  ASSERT_TRUE(WaitForPort(m.metrics_port, std::chrono::seconds(5)));
  auto metrics = h.Get("/metrics");
  ASSERT_TRUE(metrics.ok());
  for (const char* line : {"crescent_master_rpc_items_total{method=\"Commit\"} 3",
                           "crescent_master_rpc_failures_total{method=\"Commit\"} 1",
                           "crescent_master_rpc_requests_total{method=\"Reserve\"} 1",
                           "crescent_master_reservations 0"}) {
    EXPECT_NE(metrics->body.find(line), std::string::npos) << line << "\n" << metrics->body;
  }
}

TEST(MasterServerTest, GarbageOnTheFastPortHurtsOnlyItsOwnConnection) {
  MasterProcess m;
  ASSERT_TRUE(m.ready);
  auto c = MasterClient::Create(m.address());
  auto health = c->Health();
  ASSERT_TRUE(health.ok());
  ASSERT_NE(health->fast_port, 0);
  // An unknown method gets an error reply; a frame claiming 1 GiB closes
  // its connection.
  FastChannel raw("127.0.0.1", health->fast_port, std::chrono::milliseconds(2000));
  bool reached = false;
  auto unknown = raw.Call(200, "xyz", &reached);
  EXPECT_EQ(unknown.status().code(), StatusCode::kUnimplemented) << unknown.status().ToString();
  auto truncated = raw.Call(wire::kExist, std::string("\x05\x00\x00\x00", 4), &reached);
  EXPECT_EQ(truncated.status().code(), StatusCode::kInvalidArgument);
  {
    auto fd = transfer::ConnectTcp("127.0.0.1", health->fast_port, std::chrono::seconds(2), 0);
    ASSERT_TRUE(fd.ok());
    std::string header;
    wire::AppendHeader(&header, 1u << 30, 1, wire::kExist);
    ASSERT_TRUE(transfer::SendAll(fd->get(), header.data(), header.size(), "test").ok());
    char byte;
    transfer::SetSocketTimeouts(fd->get(), std::chrono::milliseconds(2000));
    EXPECT_FALSE(transfer::RecvAll(fd->get(), &byte, 1, "test").ok());
  }
  auto exist = c->Exist("k");
  ASSERT_TRUE(exist.ok()) << exist.status().ToString();
  EXPECT_FALSE(*exist);
  EXPECT_TRUE(c->using_fast_port());
  // The master's host-local unix socket is advertised; a name that does not
  // exist here (a master on another host) falls back to TCP.
  EXPECT_EQ(health->fast_unix.rfind("crescent-master-", 0), 0u) << health->fast_unix;
  FastChannel elsewhere("127.0.0.1", health->fast_port, std::chrono::milliseconds(2000),
                        "crescent-master-on-another-host");
  auto via_tcp = elsewhere.BatchExist({"k"});
  ASSERT_TRUE(via_tcp.ok()) << via_tcp.status().ToString();
  FastChannel local("127.0.0.1", 1, std::chrono::milliseconds(2000), health->fast_unix);
  auto via_unix = local.BatchExist({"k"});  // port 1 is closed: only unix can work
  ASSERT_TRUE(via_unix.ok()) << via_unix.status().ToString();
}

TEST(MasterServerTest, AClientThatDoesNotReadItsRepliesStallsOnlyItself) {
  MasterProcess m;
  ASSERT_TRUE(m.ready);
  auto c = MasterClient::Create(m.address());
  auto health = c->Health();
  ASSERT_TRUE(health.ok());
  auto rss_mb = [&] {
    std::ifstream status("/proc/" + std::to_string(m.proc->pid()) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6)) / 1024;
    }
    return -1L;
  };
  const long rss_before = rss_mb();
  auto fd = transfer::ConnectTcp("127.0.0.1", health->fast_port, std::chrono::seconds(2), 0);
  ASSERT_TRUE(fd.ok());
  // 2000 calls of 500 missing keys each: ~80 MB of NOT_FOUND replies, far
  // more than the master keeps unsent for one connection (16 MiB).
  std::string body;
  wire::Writer w(&body);
  w.U32(500);
  for (int k = 0; k < 500; ++k) w.Str("missing-key-" + std::to_string(k));
  constexpr int kCalls = 2000;
  std::thread sender([&] {
    for (int i = 0; i < kCalls; ++i) {
      std::string frame;
      wire::AppendHeader(&frame, static_cast<uint32_t>(body.size()), i + 1,
                         wire::kGetReplicaList);
      frame += body;
      if (!transfer::SendAll(fd->get(), frame.data(), frame.size(), "test").ok()) return;
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  // The master holds at most ~16 MiB of its replies (plus what it is
  // building), not all ~60 MB.
  const long grew = rss_mb() - rss_before;
  EXPECT_LT(grew, 40) << "MB of master memory for one unread connection";
  std::printf("master memory grew %ld MB for the unread connection\n", grew);
  // Meanwhile everyone else is served.
  auto exist = c->Exist("k");
  ASSERT_TRUE(exist.ok()) << exist.status().ToString();
  EXPECT_TRUE(c->using_fast_port());
  // Then every reply arrives, in order.
  transfer::SetSocketTimeouts(fd->get(), std::chrono::milliseconds(10000));
  for (int i = 0; i < kCalls; ++i) {
    char head[wire::kHeaderBytes];
    ASSERT_TRUE(transfer::RecvAll(fd->get(), head, sizeof(head), "test").ok()) << i;
    const wire::Header h = wire::ParseHeader(head);
    ASSERT_EQ(h.call_id, static_cast<uint32_t>(i + 1));
    std::string reply(h.body_len, '\0');
    ASSERT_TRUE(transfer::RecvAll(fd->get(), reply.data(), reply.size(), "test").ok());
    wire::Reader r(reply.data(), reply.size());
    ASSERT_TRUE(r.Status().ok());
    ASSERT_EQ(r.U32(), 500u);
    EXPECT_EQ(r.Status().code(), StatusCode::kNotFound);
  }
  sender.join();
}

TEST(MasterServerTest, WithoutAFastPortClientsUseGrpcAndCannotReserve) {
  MasterProcess m({"--fast-port", "-1"});
  ASSERT_TRUE(m.ready);
  auto c = MasterClient::Create(m.address());
  ASSERT_TRUE(c->MountSegment("c1", {"seg", 4096, 1 << 20}).ok());
  EXPECT_EQ(c->Health()->fast_port, 0);
  ASSERT_TRUE(c->PutStart({"k", 100, 1, false, ""}).ok());
  ASSERT_TRUE(c->PutEnd("k", 77).ok());
  EXPECT_TRUE(c->Exist("k").value_or(false));
  EXPECT_FALSE(c->using_fast_port());
  EXPECT_EQ(c->Reserve("c1", 8192, 8192, "").status().code(), StatusCode::kUnimplemented);
}

TEST(MasterServerTest, UnreachableMasterIsUnavailableNamingTheAddress) {
  const std::string address = "127.0.0.1:" + std::to_string(FreePort());
  auto c = MasterClient::Create(address, MasterClientOptions{std::chrono::milliseconds(500)});
  auto r = c->Exist("k");
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find(address), std::string::npos) << r.status().message();
}

TEST(MasterServerTest, RestartIsVisibleInPingAndReRegistrationRestoresObjects) {
  MasterProcess m;
  ASSERT_TRUE(m.ready);
  auto c = MasterClient::Create(m.address());
  ASSERT_TRUE(c->MountSegment("c1", {"seg", 0, 1 << 20}).ok());
  ASSERT_TRUE(c->PutStart({"k", 100, 1, false, ""}).ok());
  ASSERT_TRUE(c->PutEnd("k", 5).ok());
  auto first = c->Ping("c1");
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->result.known);
  ASSERT_EQ(first->result.events.size(), 1u);
  const SegmentObject held = first->result.events[0].object;

  // Restart on the same port.
  m.proc->Kill();
  Subprocess again({CrescentBin(), "master", "--port", std::to_string(m.port), "--metrics-port",
                    std::to_string(FreePort())});
  ASSERT_TRUE(WaitForPort(m.port, std::chrono::seconds(10)));
  StatusOr<PingReply> second = UnavailableError("not yet");
  for (int i = 0; i < 50 && !second.ok(); ++i) {
    second = c->Ping("c1");
    if (!second.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_FALSE(second->result.known);
  EXPECT_NE(second->master_id, first->master_id);
  EXPECT_EQ(c->Exist("k").value_or(true), false);
  auto taken = c->MountSegment("c1", {"seg", 0, 1 << 20}, {held});
  ASSERT_TRUE(taken.ok());
  EXPECT_EQ(*taken, 1u);
  auto info = c->GetReplicaList("k");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->crc32c, 5u);
}

TEST(MasterServerTest, ConfigFileAndBadFlagsGetClearErrors) {
  TempDir dir;
  const std::string good = dir.path() + "/master.json";
  std::ofstream(good) << R"({"port": 123, "eviction-ratio": 0.1, "client_ttl": 3,
                            "default_kv_lease_ttl": 500, "cluster_id": "c9"})";
  auto o = LoadMasterConfig(good, MasterServerOptions{});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->port, 123);
  EXPECT_DOUBLE_EQ(o->master.eviction_ratio, 0.1);
  EXPECT_EQ(o->master.client_ttl_ms, 3000);
  EXPECT_EQ(o->master.default_kv_lease_ttl_ms, 500);
  EXPECT_EQ(o->cluster_id, "c9");
  const std::string bad = dir.path() + "/bad.json";
  std::ofstream(bad) << R"({"evicton_ratio": 0.1})";
  auto e = LoadMasterConfig(bad, MasterServerOptions{});
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.status().message().find("evicton_ratio"), std::string::npos);

  Subprocess p({CrescentBin(), "master", "--port", std::to_string(FreePort()),
                "--eviction-ratio", "1.5"});
  EXPECT_EQ(p.Wait(), 2);
  EXPECT_NE(p.Log().find("eviction_ratio must be in (0, 1]"), std::string::npos) << p.Log();
}

}  // namespace
}  // namespace crescent::store
