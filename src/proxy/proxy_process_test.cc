// `crescent proxy` as a real process in front of fake instances that are
// real processes: kill -9 and membership changes under load, with zero
// failed client requests while a peer of the same role remains.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/http.h"
#include "common/testutil.h"

namespace crescent::proxy {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using crescent::testing::Subprocess;

struct Instance {
  uint16_t port;
  std::unique_ptr<Subprocess> proc;
  std::string address() const { return fmt::format("127.0.0.1:{}", port); }
};

Instance StartFake(std::string name) {
  Instance i;
  i.port = crescent::testing::FreePort();
  i.proc = std::make_unique<Subprocess>(std::vector<std::string>{
      CRESCENT_FAKE_INSTANCE_BIN, "--port", std::to_string(i.port), "--name", name,
      "--token-interval-ms", "2"});
  EXPECT_TRUE(crescent::testing::WaitForPort(i.port, 10s)) << name;
  return i;
}

// Clients sending requests in a loop until stopped; counts the outcomes.
class Load {
 public:
  Load(uint16_t port, int clients) {
    for (int c = 0; c < clients; ++c) {
      threads_.emplace_back([this, port, c] {
        http::Client client("127.0.0.1", port);
        for (int n = 0; !stop_; ++n) {
          // Streams are asked for too: a killed decode instance must be
          // retried before their first byte (the fake sends it after 2 ms,
          // so most streams on it have started: those are counted apart).
          bool stream = (n + c) % 4 == 0;
          json req = {{"prompt", fmt::format("client {} request {}", c, n)},
                      {"max_tokens", 8},
                      {"stream", stream}};
          auto r = client.Post("/v1/completions", req.dump());
          if (r.ok() && r->status == 200 && r->body.find("\"error\"") == std::string::npos) {
            ok_++;
          } else if (r.ok() && stream && r->status == 200) {
            broken_streams_++;
          } else {
            failed_++;
            std::lock_guard lock(mu_);
            last_error_ = r.ok() ? fmt::format("HTTP {}: {}", r->status, r->body) : r.status().ToString();
          }
        }
      });
    }
  }
  ~Load() { Stop(); }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_) if (t.joinable()) t.join();
  }
  int ok() const { return ok_; }
  int failed() const { return failed_; }
  int broken_streams() const { return broken_streams_; }
  std::string last_error() {
    std::lock_guard lock(mu_);
    return last_error_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> ok_{0}, failed_{0}, broken_streams_{0};
  std::mutex mu_;
  std::string last_error_;
  std::vector<std::thread> threads_;
};

http::ClientResponse Admin(uint16_t port, std::string path, std::string type, std::string addr) {
  http::Client c("127.0.0.1", port);
  http::ClientRequest r{http::Method::kPost, std::move(path),
                        json({{"type", type}, {"instance", addr}}).dump(), "application/json",
                        {{"X-API-Key", "test-key"}}};
  auto resp = c.Send(r);
  EXPECT_TRUE(resp.ok());
  return resp.ok() ? *resp : http::ClientResponse{};
}

TEST(ProxyProcessTest, KillAndMembershipChangesUnderLoadFailNoRequest) {
  Instance p0 = StartFake("p0"), p1 = StartFake("p1"), d0 = StartFake("d0"), d1 = StartFake("d1");
  uint16_t port = crescent::testing::FreePort();
  Subprocess proxy({crescent::testing::CrescentBin(), "proxy", "--model", "fake-model", "--prefill",
                    p0.address(), p1.address(), "--decode", d0.address(), d1.address(), "--port",
                    std::to_string(port), "--host", "127.0.0.1", "--scheduling", "least_loaded",
                    "--probe-interval-ms", "200", "--probe-timeout-ms", "500"},
                   {{"ADMIN_API_KEY", "test-key"}, {"CRESCENT_LOG", "warn"}});
  ASSERT_TRUE(crescent::testing::WaitForPort(port, 10s));
  {
    Load load(port, 6);
    std::this_thread::sleep_for(400ms);
    // Sudden death of one instance of each role.
    d0.proc->Kill();
    p0.proc->Kill();
    std::this_thread::sleep_for(600ms);
    // A new decode instance joins, then an old one is drained away.
    Instance d2 = StartFake("d2");
    ASSERT_EQ(Admin(port, "/instances/add", "decode", d2.address()).status, 200);
    std::this_thread::sleep_for(300ms);
    ASSERT_EQ(Admin(port, "/instances/remove", "decode", d1.address()).status, 200);
    std::this_thread::sleep_for(400ms);
    load.Stop();
    std::printf("load: %d ok, %d failed, %d streams ended by an error event\n", load.ok(),
                load.failed(), load.broken_streams());
    EXPECT_GT(load.ok(), 100);
    EXPECT_EQ(load.failed(), 0) << load.last_error();
    // Streams already running on d0 when it died end with an error event
    // (never hang); at most one per client.
    EXPECT_LE(load.broken_streams(), 6);
    json st = json::parse(http::Client("127.0.0.1", port).Get("/status")->body);
    std::set<std::string> decode_nodes;
    for (const auto& n : st["decode_nodes"]) decode_nodes.insert(n);
    EXPECT_TRUE(decode_nodes.count(d2.address()));
    EXPECT_FALSE(decode_nodes.count(d1.address()));  // drained and gone
    for (const auto& i : st["instances"])
      if (i["instance"] == d0.address() || i["instance"] == p0.address()) {
        EXPECT_FALSE(i["healthy"].get<bool>());
      }
  }
  proxy.Signal(SIGTERM);
  EXPECT_EQ(proxy.Wait(10s), 0);
  if (HasFailure()) proxy.DumpLog();
}

}  // namespace
}  // namespace crescent::proxy
