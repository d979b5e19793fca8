// `crescent master` as a real process, driven through MasterClient.
#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "common/testutil.h"
#include "store/master_client.h"
#include "store/master_server.h"

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

TEST(MasterServerTest, ServesTheObjectLifecycleOverGrpc) {
  MasterProcess m;
  ASSERT_TRUE(m.ready);
  auto c = MasterClient::Create(m.address());
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
