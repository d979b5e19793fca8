// Every MetadataStore backend against its real server: a `crescent
// metadata-server` process, a real etcd, a real redis-server.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/testutil.h"
#include "transfer/metadata/metadata.h"
#include "transfer/metadata/metadata_keys.h"

namespace crescent::transfer {
namespace {

using namespace std::chrono_literals;
using testing::Subprocess;

// A metadata server of one kind, started for one test.
class Server {
 public:
  virtual ~Server() = default;
  virtual bool ok() const = 0;
  virtual std::string url() const = 0;
  virtual Subprocess& process() = 0;
  // Starts it again on the same port (state lost for http and redis).
  virtual bool Restart() { return false; }
};

class HttpServer : public Server {
 public:
  HttpServer() : port_(testing::FreePort()) { Start(); }
  bool ok() const override { return ok_; }
  std::string url() const override { return "http://127.0.0.1:" + std::to_string(port_) + "/metadata"; }
  Subprocess& process() override { return *proc_; }
  bool Restart() override {
    proc_.reset();
    Start();
    return ok_;
  }

 private:
  void Start() {
    proc_ = std::make_unique<Subprocess>(std::vector<std::string>{
        testing::CrescentBin(), "metadata-server", "--host", "127.0.0.1", "--port", std::to_string(port_)});
    ok_ = testing::WaitForPort(port_, 10s);
    if (!ok_) proc_->DumpLog();
  }
  uint16_t port_;
  std::unique_ptr<Subprocess> proc_;
  bool ok_ = false;
};

class Etcd : public Server {
 public:
  bool ok() const override { return etcd_.ok(); }
  std::string url() const override { return "etcd://" + etcd_.endpoint(); }
  Subprocess& process() override { return etcd_.process(); }

 private:
  testing::EtcdServer etcd_;
};

// Like testing::RedisServer, but restartable on the same port.
class Redis : public Server {
 public:
  Redis() : port_(testing::FreePort()) { Start(); }
  bool ok() const override { return ok_; }
  std::string url() const override { return "redis://127.0.0.1:" + std::to_string(port_); }
  Subprocess& process() override { return *proc_; }
  bool Restart() override {
    proc_.reset();
    Start();
    return ok_;
  }

 private:
  void Start() {
    proc_ = std::make_unique<Subprocess>(std::vector<std::string>{
        "redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no"});
    ok_ = testing::WaitForPort(port_, 10s);
    if (!ok_) proc_->DumpLog();
  }
  uint16_t port_;
  std::unique_ptr<Subprocess> proc_;
  bool ok_ = false;
};

std::unique_ptr<Server> MakeServer(const std::string& kind) {
  if (kind == "http") return std::make_unique<HttpServer>();
  if (kind == "etcd") return std::make_unique<Etcd>();
  return std::make_unique<Redis>();
}

class MetadataTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    server_ = MakeServer(GetParam());
    ASSERT_TRUE(server_->ok());
  }

  // etcd grants leases in whole seconds.
  std::chrono::milliseconds Ttl() const { return GetParam() == "etcd" ? 2000ms : 600ms; }

  std::unique_ptr<MetadataStore> Open(bool leased = true) {
    auto spec = ParseMetadataServer(server_->url());
    EXPECT_TRUE(spec.ok());
    MetadataOptions o;
    o.ttl = Ttl();
    o.op_timeout = 2000ms;
    o.leased = leased;
    auto s = OpenMetadataStore(*spec, o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // Polls until `key` is (present) or is not there; false on timeout.
  bool WaitFor(MetadataStore& s, const std::string& key, bool present, std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      auto r = s.Get(key);
      if (r.ok() == present && (r.ok() || r.status().code() == StatusCode::kNotFound)) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  std::unique_ptr<Server> server_;
};

TEST_P(MetadataTest, PutGetListDeleteWithBinaryValues) {
  auto s = Open();
  ASSERT_TRUE(s);
  std::string binary("\0\x01\xff\r\n=&?%", 10);
  auto random = testing::RandomBytes(70000, 7);
  std::string big(random.begin(), random.end());
  const std::string seg = keys::SegmentPrefix("crescent");
  ASSERT_TRUE(s->Put(seg + "a b/c?&=", binary).ok());
  ASSERT_TRUE(s->Put(seg + "big", big).ok());
  ASSERT_TRUE(s->Put(seg + "x", "1").ok());
  ASSERT_TRUE(s->Put(keys::SegmentPrefix("other") + "x", "other cluster").ok());
  ASSERT_TRUE(s->Put(seg + "x", "2").ok());  // replaces

  EXPECT_EQ(*s->Get(seg + "a b/c?&="), binary);
  EXPECT_EQ(*s->Get(seg + "big"), big);
  EXPECT_EQ(*s->Get(seg + "x"), "2");
  auto missing = s->Get(seg + "nope");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("nope"), std::string::npos);

  auto list = s->List(seg);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0], std::make_pair(seg + "a b/c?&=", binary));
  EXPECT_EQ((*list)[1].first, seg + "big");
  EXPECT_EQ((*list)[2], std::make_pair(seg + "x", std::string("2")));
  EXPECT_EQ(s->List("crescent/segments/zzz")->size(), 0u);

  ASSERT_TRUE(s->Delete(seg + "x").ok());
  EXPECT_TRUE(s->Delete(seg + "x").ok());  // absent: fine
  EXPECT_EQ(s->Get(seg + "x").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(s->List(seg)->size(), 2u);
}

TEST_P(MetadataTest, ConcurrentClients) {
  constexpr int kClients = 3, kThreads = 3, kKeys = 30;
  std::vector<std::unique_ptr<MetadataStore>> stores;
  for (int c = 0; c < kClients; ++c) stores.push_back(Open());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, c, t] {
        for (int k = 0; k < kKeys; ++k) {
          std::string key = fmt::format("crescent/segments/c{}-t{}-k{:03}", c, t, k);
          std::string value = fmt::format("value of {}", key);
          if (!stores[c]->Put(key, value).ok()) ++failures;
          auto got = stores[(c + 1) % kClients]->Get(key);  // read through another client
          if (!got.ok() || *got != value) ++failures;
        }
      });
    }
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto all = stores[0]->List("crescent/segments/");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), size_t(kClients * kThreads * kKeys));
}

// The writer is a separate `crescent metadata put --hold` process: its
// entry lives while it runs (refreshed past its ttl) and expires after kill -9.
TEST_P(MetadataTest, EntriesOfKilledProcessExpire) {
  auto reader = Open(false);
  const std::string key = keys::SegmentKey("crescent", "writer");
  Subprocess writer({testing::CrescentBin(), "metadata", "--metadata-server", server_->url(), "put",
                     key, "alive", "--hold", "--ttl-ms", std::to_string(Ttl().count())});
  ASSERT_TRUE(WaitFor(*reader, key, true, 10s)) << (writer.DumpLog(), "writer never published");
  std::this_thread::sleep_for(Ttl() * 2);  // well past one ttl: kept alive
  EXPECT_EQ(reader->Get(key).value_or(""), "alive");
  auto t0 = std::chrono::steady_clock::now();
  writer.Signal(SIGKILL);
  ASSERT_TRUE(WaitFor(*reader, key, false, Ttl() + 3s)) << "entry of a dead process did not expire";
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GT(took, Ttl() / 4);  // it was the lease that expired, not a clean removal
}

TEST_P(MetadataTest, ClosedClientEntriesGoAtOnceUnlessUnleased) {
  auto reader = Open(false);
  {
    auto w = Open(true);
    ASSERT_TRUE(w->Put("crescent/segments/leased", "x").ok());
    auto p = Open(false);
    ASSERT_TRUE(p->Put("crescent/segments/kept", "y").ok());
  }
  EXPECT_EQ(reader->Get("crescent/segments/leased").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(reader->Get("crescent/segments/kept").value_or(""), "y");
}

TEST_P(MetadataTest, ServerDownGivesUnavailableWithAddress) {
  auto s = Open();
  ASSERT_TRUE(s->Put("crescent/segments/k", "v").ok());
  server_->process().Kill();
  auto t0 = std::chrono::steady_clock::now();
  auto r = s->Get("crescent/segments/k");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
  auto spec = *ParseMetadataServer(server_->url());
  std::string addr = fmt::format("127.0.0.1:{}", spec.endpoints[0].second);
  EXPECT_NE(r.status().message().find(addr), std::string::npos) << r.status().ToString();
  EXPECT_FALSE(s->Put("crescent/segments/k", "v").ok());
}

// SIGSTOP takes effect asynchronously in a multi-threaded process: a thread
// may serve one more request before the group stop reaches it. Waits until
// every thread of `pid` is stopped.
bool WaitStopped(pid_t pid, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    bool all = true;
    for (const auto& t : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid))) {
      std::ifstream in(t.path() / "stat");
      std::string stat((std::istreambuf_iterator<char>(in)), {});
      size_t paren = stat.rfind(')');
      if (paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'T') all = false;
    }
    if (all) return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

// A server that accepts but never answers (SIGSTOP) costs op_timeout, not a hang.
TEST_P(MetadataTest, HungServerTimesOut) {
  auto warm = Open(false);  // a fresh etcd answers once it elected itself
  ASSERT_TRUE(warm->Put("crescent/segments/h", "v").ok());
  auto spec = ParseMetadataServer(server_->url());
  MetadataOptions o;
  o.ttl = Ttl();
  o.op_timeout = 500ms;
  o.leased = false;
  auto s = OpenMetadataStore(*spec, o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  server_->process().Signal(SIGSTOP);
  ASSERT_TRUE(WaitStopped(server_->process().pid(), 5s));
  auto t0 = std::chrono::steady_clock::now();
  auto r = (*s)->Get("crescent/segments/h");
  auto took = std::chrono::steady_clock::now() - t0;
  server_->process().Signal(SIGCONT);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().code() == StatusCode::kDeadlineExceeded ||
              r.status().code() == StatusCode::kUnavailable)
      << r.status().ToString();
  EXPECT_NE(r.status().message().find(fmt::format("127.0.0.1:{}", spec->endpoints[0].second)),
            std::string::npos)
      << r.status().ToString();
  EXPECT_LT(took, 2500ms);  // etcd tries each endpoint once
  // And it recovers once the server runs again.
  EXPECT_EQ((*s)->Get("crescent/segments/h").value_or(""), "v");
}

TEST_P(MetadataTest, OpenUnreachableServerSaysWhereAndHow) {
  uint16_t port = testing::FreePort();
  std::string url = GetParam() == "http" ? fmt::format("http://127.0.0.1:{}/metadata", port)
                                         : fmt::format("{}://127.0.0.1:{}", GetParam(), port);
  MetadataOptions o;
  o.op_timeout = 1000ms;
  auto t0 = std::chrono::steady_clock::now();
  auto s = OpenMetadataStore(*ParseMetadataServer(url), o);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(s.status().message().find(fmt::format("127.0.0.1:{}", port)), std::string::npos)
      << s.status().ToString();
  EXPECT_NE(s.status().message().find("start"), std::string::npos) << s.status().ToString();
}

// A restarted http or redis server (no persistence) lost everything: live
// clients publish their entries again within a ttl.
TEST_P(MetadataTest, EntriesComeBackAfterServerRestart) {
  if (GetParam() == "etcd") GTEST_SKIP() << "etcd keeps its data across restarts";
  auto s = Open();
  ASSERT_TRUE(s->Put("crescent/segments/back", "again").ok());
  ASSERT_TRUE(server_->Restart());
  auto reader = Open(false);
  EXPECT_TRUE(WaitFor(*reader, "crescent/segments/back", true, Ttl() * 3));
  EXPECT_EQ(reader->Get("crescent/segments/back").value_or(""), "again");
}

// A key another client deleted is not brought back by its owner's refresh.
TEST_P(MetadataTest, DeletedByAnotherClientStaysDeleted) {
  auto owner = Open();
  ASSERT_TRUE(owner->Put("crescent/segments/gone", "x").ok());
  auto other = Open(false);
  ASSERT_TRUE(other->Delete("crescent/segments/gone").ok());
  std::this_thread::sleep_for(Ttl());  // three refresh periods
  EXPECT_EQ(other->Get("crescent/segments/gone").status().code(), StatusCode::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(Backends, MetadataTest, ::testing::Values("http", "etcd", "redis"),
                         [](const auto& info) { return info.param; });

// etcd://dead,live: operations fail over to the endpoint that answers.
TEST(EtcdMetadataTest, FailsOverToTheNextEndpoint) {
  testing::EtcdServer etcd;
  ASSERT_TRUE(etcd.ok());
  uint16_t dead = testing::FreePort();
  auto spec = ParseMetadataServer(fmt::format("etcd://127.0.0.1:{},{}", dead, etcd.endpoint()));
  ASSERT_TRUE(spec.ok());
  MetadataOptions o;
  o.ttl = 2000ms;
  auto s = OpenMetadataStore(*spec, o);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_TRUE((*s)->Put("crescent/segments/f", "v").ok());
  EXPECT_EQ((*s)->Get("crescent/segments/f").value_or(""), "v");
  EXPECT_EQ((*s)->Describe(), fmt::format("etcd://127.0.0.1:{},{}", dead, etcd.endpoint()));
}

TEST(MetadataKeysTest, Schema) {
  EXPECT_EQ(keys::SegmentKey("crescent", "host:1234"), "crescent/segments/host:1234");
  EXPECT_EQ(keys::SegmentPrefix("c1"), "c1/segments/");
  EXPECT_EQ(keys::EndpointKey("crescent", "master", "0"), "crescent/endpoints/master/0");
  EXPECT_TRUE(keys::ValidateClusterId("crescent").ok());
  EXPECT_FALSE(keys::ValidateClusterId("a/b").ok());
  EXPECT_FALSE(keys::ValidateClusterId("").ok());
}

}  // namespace
}  // namespace crescent::transfer
