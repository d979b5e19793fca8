// The store as users run it: `crescent master` (with the HTTP metadata
// service), member processes holding segments (`crescent store-bench --mode
// holder`), `crescent store ...` commands and library clients, all real
// processes on loopback.
#include <signal.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "common/http.h"
#include "common/testutil.h"
#include "store/client.h"
#include "store/master_client.h"

namespace crescent::store {
namespace {

using crescent::testing::CrescentBin;
using crescent::testing::FreePort;
using crescent::testing::RandomBytes;
using crescent::testing::Subprocess;
using crescent::testing::TempDir;
using crescent::testing::WaitForPort;

std::vector<uint8_t> ValueOf(const std::string& key, size_t size) {
  return RandomBytes(size, std::hash<std::string>{}(key));
}

class StoreProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_ = FreePort();
    metrics_port_ = FreePort();
    metadata_port_ = FreePort();
    StartMaster();
    config_path_ = dir_.path() + "/mooncake.json";
    std::ofstream(config_path_) << R"({"local_hostname": "127.0.0.1", "protocol": "tcp",
        "metadata_server": "http://127.0.0.1:)" << metadata_port_ << R"(/metadata",
        "master_server_address": "127.0.0.1:)" << port_ << R"(",
        "global_segment_size": "32MB", "local_buffer_size": "16MB"})";
  }

  void StartMaster() {
    master_ = std::make_unique<Subprocess>(std::vector<std::string>{
        CrescentBin(), "master", "--port", std::to_string(port_), "--metrics-port",
        std::to_string(metrics_port_), "--enable-http-metadata-server",
        "--http-metadata-server-port", std::to_string(metadata_port_), "--client-ttl", "2",
        "--default-kv-lease-ttl", "500"});
    ASSERT_TRUE(WaitForPort(port_, std::chrono::seconds(10)));
    ASSERT_TRUE(WaitForPort(metadata_port_, std::chrono::seconds(10)));
  }

  std::string master_address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string metadata_url() const {
    return "http://127.0.0.1:" + std::to_string(metadata_port_) + "/metadata";
  }

  uint64_t Segments() {
    auto h = MasterClient::Create(master_address())->Health();
    return h.ok() ? h->stats.segments : 0;
  }

  // A member process contributing `size` of memory; returns once mounted.
  std::unique_ptr<Subprocess> StartHolder(const std::string& size) {
    const uint64_t before = Segments();
    auto p = std::make_unique<Subprocess>(std::vector<std::string>{
        CrescentBin(), "store-bench", "--mode", "holder", "--master", master_address(),
        "--metadata", metadata_url(), "--segment-size", size});
    for (int i = 0; i < 100 && Segments() <= before; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_GT(Segments(), before) << p->Log();
    return p;
  }

  std::unique_ptr<Client> NewClient() {
    auto config = LoadMooncakeConfig(config_path_);
    EXPECT_TRUE(config.ok()) << config.status().ToString();
    ClientOptions o;
    o.config = *config;
    o.config.global_segment_size = 0;
    o.transfer_timeout = std::chrono::milliseconds(2000);
    auto c = Client::Create(o);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Runs `crescent store ...`; returns {exit code, output}.
  std::pair<int, std::string> Cli(std::vector<std::string> args) {
    std::vector<std::string> argv = {CrescentBin(), "store"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back("--config");
    argv.push_back(config_path_);
    Subprocess p(argv);
    int rc = p.Wait(std::chrono::seconds(20));
    return {rc, p.Log()};
  }

  TempDir dir_;
  uint16_t port_ = 0, metrics_port_ = 0, metadata_port_ = 0;
  std::string config_path_;
  std::unique_ptr<Subprocess> master_;
};

TEST_F(StoreProcessTest, CommandLinePutGetLsStatRm) {
  auto holder = StartHolder("16MB");
  EXPECT_EQ(Cli({"put", "greeting", "--value", "hello store"}).first, 0);
  auto [rc, out] = Cli({"get", "greeting"});
  EXPECT_EQ(rc, 0);
  EXPECT_NE(out.find("hello store"), std::string::npos) << out;
  auto ls = Cli({"ls"});
  EXPECT_NE(ls.second.find("greeting"), std::string::npos) << ls.second;
  auto stat = Cli({"stat", "greeting"});
  EXPECT_NE(stat.second.find("size: 11"), std::string::npos) << stat.second;
  EXPECT_NE(stat.second.find("replica: "), std::string::npos) << stat.second;
  EXPECT_EQ(Cli({"put", "greeting", "--value", "again"}).first, 1);  // ALREADY_EXISTS
  // Bad inputs: clear errors, no crash.
  auto empty_key = Cli({"put", "", "--value", "x"});
  EXPECT_EQ(empty_key.first, 2);
  EXPECT_NE(empty_key.second.find("key is empty"), std::string::npos) << empty_key.second;
  const std::string big = dir_.path() + "/big.bin";
  std::ofstream(big, std::ios::binary) << std::string(20 << 20, 'x');
  auto too_big = Cli({"put", "big", "--file", big});
  EXPECT_EQ(too_big.first, 1);
  EXPECT_NE(too_big.second.find("larger than every segment"), std::string::npos) << too_big.second;
  // The get above holds a read lease (500 ms here): rm waits it out.
  auto leased = Cli({"rm", "greeting"});
  if (leased.first != 0) {
    EXPECT_NE(leased.second.find("read lease"), std::string::npos) << leased.second;
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    EXPECT_EQ(Cli({"rm", "greeting"}).first, 0);
  }
  auto gone = Cli({"get", "greeting"});
  EXPECT_EQ(gone.first, 1);
  EXPECT_NE(gone.second.find("NOT_FOUND"), std::string::npos) << gone.second;
}

TEST_F(StoreProcessTest, SeveralClientsSeeEachOthersObjects) {
  auto h1 = StartHolder("32MB");
  auto h2 = StartHolder("32MB");
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(NewClient());
    ASSERT_NE(clients.back(), nullptr);
  }
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      for (int k = 0; k < 30; ++k) {
        const std::string key = "c" + std::to_string(i) + "/" + std::to_string(k);
        if (!clients[i]->Put(key, ValueOf(key, 1000 + 3000 * k)).ok()) ++errors;
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(errors.load(), 0);
  for (int i = 0; i < 3; ++i) {
    for (int k = 0; k < 30; ++k) {
      const std::string key = "c" + std::to_string(i) + "/" + std::to_string(k);
      auto got = clients[(i + 1) % 3]->Get(key);
      ASSERT_TRUE(got.ok()) << key << ": " << got.status().ToString();
      EXPECT_EQ(*got, ValueOf(key, 1000 + 3000 * k)) << key;
    }
  }
}

TEST_F(StoreProcessTest, HolderKilledWithSigkillLosesOnlyItsObjects) {
  auto a = StartHolder("16MB");
  auto b = StartHolder("16MB");
  auto c = NewClient();
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c);
  std::vector<std::string> keys;
  for (int k = 0; k < 40; ++k) {
    keys.push_back("k/" + std::to_string(k));
    ASSERT_TRUE(c->Put(keys.back(), ValueOf(keys.back(), 65536)).ok());
  }
  // Which holder has each copy.
  auto segments = c->master().ListSegments();
  ASSERT_TRUE(segments.ok());
  ASSERT_EQ(segments->size(), 2u);
  std::map<std::string, std::string> where;
  for (const auto& key : keys) where[key] = c->master().QueryKey(key)->replicas[0].segment;
  const std::string dead = where[keys[0]];
  Subprocess* victim = nullptr;
  // Segment names are "<host>:<pid>:<random>" (the holder's client id).
  for (auto* p : {a.get(), b.get()}) {
    if (dead.find(":" + std::to_string(p->pid()) + ":") != std::string::npos) victim = p;
  }
  ASSERT_NE(victim, nullptr);
  victim->Kill();  // SIGKILL
  // Right away: reads of its objects fail; no read ever returns wrong bytes.
  for (const auto& key : keys) {
    auto got = c->Get(key);
    if (got.ok()) {
      EXPECT_EQ(*got, ValueOf(key, 65536)) << key;
    } else {
      EXPECT_EQ(where[key], dead) << key << ": " << got.status().ToString();
    }
  }
  // After client_ttl (2 s) the master drops its segment.
  for (int i = 0; i < 100 && Segments() != 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(Segments(), 1u);
  for (const auto& key : keys) {
    auto got = c->Get(key);
    if (where[key] == dead) {
      EXPECT_EQ(got.status().code(), StatusCode::kNotFound) << key;
    } else {
      ASSERT_TRUE(got.ok()) << key << ": " << got.status().ToString();
      EXPECT_EQ(*got, ValueOf(key, 65536)) << key;
    }
  }
  // New objects go to the survivor.
  ASSERT_TRUE(c->Put("after", ValueOf("after", 5000)).ok());
  EXPECT_EQ(*c->Get("after"), ValueOf("after", 5000));
}

TEST_F(StoreProcessTest, EvictionUnderPressureAcrossProcesses) {
  auto h = StartHolder("8MB");
  auto c = NewClient();
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c);
  for (int k = 0; k < 64; ++k) {
    const std::string key = "e/" + std::to_string(k);
    ASSERT_TRUE(c->Put(key, ValueOf(key, 512 << 10)).ok()) << key;
  }
  EXPECT_EQ(c->Get("e/0").status().code(), StatusCode::kNotFound);
  auto last = c->Get("e/63");
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(*last, ValueOf("e/63", 512 << 10));
  http::Client metrics("127.0.0.1", metrics_port_);
  auto m = metrics.Get("/metrics");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->body.find("crescent_master_evicted_objects_total 0\n"), std::string::npos);
}

TEST_F(StoreProcessTest, MasterRestartKeepsObjectsWhoseBytesLive) {
  auto h = StartHolder("16MB");
  auto c = NewClient();
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c);
  for (int k = 0; k < 10; ++k) {
    const std::string key = "r/" + std::to_string(k);
    ASSERT_TRUE(c->Put(key, ValueOf(key, 30000)).ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // holders hear of them (1 s pings)
  master_->Kill();
  StartMaster();
  // The holder re-mounts and re-registers at its next ping.
  uint64_t keys = 0;
  for (int i = 0; i < 100 && keys < 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto health = c->master().Health();
    keys = health.ok() ? health->stats.keys : 0;
  }
  ASSERT_EQ(keys, 10u) << h->Log();
  for (int k = 0; k < 10; ++k) {
    const std::string key = "r/" + std::to_string(k);
    StatusOr<std::vector<uint8_t>> got = UnavailableError("");
    // The metadata service restarted with the master: segment descriptors
    // come back when their owners republish them (within a few seconds).
    for (int i = 0; i < 80 && !got.ok(); ++i) {
      got = c->Get(key);
      if (!got.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_TRUE(got.ok()) << key << ": " << got.status().ToString();
    EXPECT_EQ(*got, ValueOf(key, 30000));
  }
}

// `crescent store-bench` (data mode) runs our store and redis-server side by
// side and reports a row per operation with both systems' rates and a ratio.
TEST(StoreBenchTest, DataModeReportsOursBesideRedis) {
  Subprocess bench({CrescentBin(), "store-bench", "--sizes", "4096", "--clients", "1,2", "--runs",
                    "1", "--warmup", "0", "--bytes-per-run", "512KB", "--segment-size", "64MB"});
  ASSERT_EQ(bench.Wait(std::chrono::seconds(60)), 0) << bench.Log();
  const std::string log = bench.Log();
  for (const char* row : {"| put | 4.00 KiB | 1 | ", "| get | 4.00 KiB | 1 | ",
                          "| put | 4.00 KiB | 2 | ", "| get | 4.00 KiB | 2 | "}) {
    const size_t at = log.find(row);
    ASSERT_NE(at, std::string::npos) << row << " missing from:\n" << log;
    // crescent ops/s, GB/s, redis ops/s, GB/s, ratio: both systems measured.
    double ours = 0, ours_gb = 0, redis = 0, redis_gb = 0, ratio = 0;
    ASSERT_EQ(std::sscanf(log.c_str() + at + std::strlen(row), "%lf | %lf | %lf | %lf | %lfx", &ours,
                          &ours_gb, &redis, &redis_gb, &ratio),
              5)
        << log.substr(at, 120);
    EXPECT_GT(ours, 0) << row;
    EXPECT_GT(redis, 0) << row;
    EXPECT_NEAR(ratio, ours / redis, ours / redis * 0.5 + 0.01) << row;  // a median of pairs
  }
}

}  // namespace
}  // namespace crescent::store
