// `crescent proxy` end to end in front of real `crescent serve` instances
// (the tiny fixture model, CPU, loopback), each a real process: responses
// equal a direct instance's; membership changes and kill -9 under a client
// load, with zero failed client requests while a peer of the same role
// remains. The instances run without --kv-transfer-config: the proxy's flow
// (prefill copy with max_tokens=1, then decode) does not depend on it.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <thread>

#include "common/http.h"
#include "common/testutil.h"

namespace crescent::proxy {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using crescent::testing::CrescentBin;
using crescent::testing::Subprocess;

constexpr char kModel[] = "tests/data/models/tiny-qwen3";
constexpr char kKey[] = "e2e-key";

struct Proc {
  uint16_t port = 0;
  std::unique_ptr<Subprocess> proc;
  std::string address() const { return fmt::format("127.0.0.1:{}", port); }
};

bool WaitHealthy(uint16_t port, Subprocess& p) {
  http::Client c("127.0.0.1", port);
  for (int i = 0; i < 400; ++i) {
    auto r = c.Get("/health");
    if (r.ok() && r->status == 200) return true;
    if (!p.Running()) break;
    std::this_thread::sleep_for(25ms);
  }
  p.DumpLog();
  return false;
}

Proc Serve() {
  Proc s;
  s.port = crescent::testing::FreePort();
  s.proc = std::make_unique<Subprocess>(std::vector<std::string>{
      CrescentBin(), "serve", "--model", kModel, "--host", "127.0.0.1", "--port",
      std::to_string(s.port), "--threads", "1", "--kv-cache-memory-bytes", "32MiB",
      "--max-model-len", "4096"});
  EXPECT_TRUE(WaitHealthy(s.port, *s.proc)) << "crescent serve did not come up";
  return s;
}

Proc Proxy(const std::vector<const Proc*>& prefill, const std::vector<const Proc*>& decode,
           std::string scheduling = "round_robin") {
  Proc p;
  p.port = crescent::testing::FreePort();
  std::vector<std::string> argv = {CrescentBin(), "proxy", "--host", "127.0.0.1", "--port",
                                   std::to_string(p.port), "--scheduling", scheduling,
                                   "--probe-interval-ms", "200", "--probe-timeout-ms", "1000"};
  argv.push_back("--prefill");
  for (auto* i : prefill) argv.push_back(i->address());
  argv.push_back("--decode");
  for (auto* i : decode) argv.push_back(i->address());
  p.proc = std::make_unique<Subprocess>(argv, std::map<std::string, std::string>{
                                                  {"ADMIN_API_KEY", kKey}, {"CRESCENT_LOG", "warn"}});
  EXPECT_TRUE(WaitHealthy(p.port, *p.proc)) << "crescent proxy did not come up";
  return p;
}

json Completion(std::vector<int32_t> prompt, int max_tokens, bool stream) {
  return {{"prompt", prompt},     {"max_tokens", max_tokens}, {"temperature", 0},
          {"ignore_eos", true},   {"stream", stream},         {"return_token_ids", true}};
}

http::ClientResponse Post(uint16_t port, const std::string& path, const std::string& body,
                          http::Headers headers = {}) {
  http::Client c("127.0.0.1", port);
  auto r = c.Send({http::Method::kPost, path, body, "application/json", std::move(headers)});
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : http::ClientResponse{};
}

int Admin(uint16_t proxy_port, const std::string& what, const std::string& type, const Proc& inst) {
  return Post(proxy_port, "/instances/" + what,
              json({{"type", type}, {"instance", inst.address()}}).dump(), {{"X-API-Key", kKey}})
      .status;
}

json Status(uint16_t proxy_port) {
  auto r = http::Client("127.0.0.1", proxy_port).Get("/status");
  return r.ok() ? json::parse(r->body, nullptr, false) : json();
}

const json* FindInstance(const json& status, const Proc& inst) {
  for (const auto& i : status["instances"])
    if (i["instance"] == inst.address()) return &i;
  return nullptr;
}

// The sum of an instance's samples of a vLLM counter.
double Counter(const Proc& inst, const std::string& name) {
  auto r = http::Client("127.0.0.1", inst.port).Get("/metrics");
  if (!r.ok()) return -1;
  double sum = 0;
  std::regex re("^" + name + R"(\{[^}]*\} ([0-9.eE+-]+))", std::regex::multiline);
  for (std::sregex_iterator it(r->body.begin(), r->body.end(), re), end; it != end; ++it)
    sum += std::stod((*it)[1]);
  return sum;
}

// Requests an instance finished.
double Finished(const Proc& inst) { return Counter(inst, "vllm:request_success_total"); }

// A sample of the proxy's /metrics, e.g. `name{role="decode"}`.
double ProxyMetric(uint16_t proxy_port, const std::string& sample) {
  auto r = http::Client("127.0.0.1", proxy_port).Get("/metrics");
  if (!r.ok()) return -1;
  size_t at = r->body.find("\n" + sample + " ");
  if (at == std::string::npos) return -1;
  return std::stod(r->body.substr(at + sample.size() + 2));
}

// The SSE events of a body, with the "created" timestamp (seconds, may
// tick between two requests) taken out.
std::vector<std::string> Events(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0, end;
  while ((end = body.find("\n\n", pos)) != std::string::npos) {
    out.push_back(std::regex_replace(body.substr(pos, end - pos), std::regex(R"("created":\d+)"),
                                     R"("created":0)"));
    pos = end + 2;
  }
  return out;
}

// A client load: `clients` threads sending greedy completions (every third
// one streamed) until stopped, checking each answer in full.
class Load {
 public:
  Load(uint16_t port, int clients, int max_tokens = 6) {
    for (int c = 0; c < clients; ++c) {
      threads_.emplace_back([this, port, c, max_tokens] {
        std::mt19937 rng(1234 + c);
        http::Client client("127.0.0.1", port);
        for (int n = 0; !stop_; ++n) {
          std::vector<int32_t> prompt(8 + rng() % 24);
          for (auto& t : prompt) t = 3 + rng() % 500;
          bool stream = n % 3 == 0;
          auto r = client.Post("/v1/completions", Completion(prompt, max_tokens, stream).dump());
          Count(r, stream, max_tokens);
        }
      });
    }
  }
  ~Load() { Stop(); }
  void Stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  int ok() const { return ok_; }
  int failed() const { return failed_; }
  int broken_streams() const { return broken_; }
  std::string last_error() {
    std::lock_guard lock(mu_);
    return last_error_;
  }

 private:
  void Count(const StatusOr<http::ClientResponse>& r, bool stream, int max_tokens) {
    std::string why;
    if (!r.ok()) {
      why = r.status().ToString();
    } else if (r->status != 200) {
      why = fmt::format("HTTP {}: {}", r->status, r->body.substr(0, 300));
    } else if (stream) {
      auto ev = Events(r->body);
      bool error = r->body.find("\"error\"") != std::string::npos;
      if (error) {
        broken_++;  // the decode instance died mid-stream: an error event, then [DONE]
        return;
      }
      if (ev.size() != size_t(max_tokens) + 1 || ev.back() != "data: [DONE]")
        why = fmt::format("stream of {} events: {}", ev.size(), r->body.substr(0, 300));
    } else {
      json j = json::parse(r->body, nullptr, false);
      if (j.is_discarded() || j["usage"]["completion_tokens"] != max_tokens)
        why = "unexpected body: " + r->body.substr(0, 300);
    }
    if (why.empty()) {
      ok_++;
      return;
    }
    failed_++;
    std::lock_guard lock(mu_);
    last_error_ = why;
  }

  std::atomic<bool> stop_{false};
  std::atomic<int> ok_{0}, failed_{0}, broken_{0};
  std::mutex mu_;
  std::string last_error_;
  std::vector<std::thread> threads_;
};

// What a client gets through the proxy (prefill on P, then decode on D) is
// what D alone returns: the same events, token by token, streamed or not.
TEST(ProxyE2eTest, ResponsesEqualADirectInstances) {
  Proc p = Serve(), d = Serve();
  Proc proxy = Proxy({&p}, {&d});
  std::ifstream in(std::string(kModel) + "/reference.json");
  json cases = json::parse(in)["cases"];
  ASSERT_GE(cases.size(), 2u);
  for (size_t i = 0; i < 3 && i < cases.size(); ++i) {
    std::vector<int32_t> prompt = cases[i]["prompt"];
    for (bool stream : {true, false}) {
      json req = Completion(prompt, 12, stream);
      req["logprobs"] = 2;
      std::string id = fmt::format("e2e-{}-{}", i, stream);
      auto direct = Post(d.port, "/v1/completions", req.dump(), {{"X-Request-Id", id}});
      auto proxied = Post(proxy.port, "/v1/completions", req.dump(), {{"X-Request-Id", id}});
      ASSERT_EQ(direct.status, 200) << direct.body;
      ASSERT_EQ(proxied.status, 200) << proxied.body;
      EXPECT_EQ(proxied.Header("content-type"), direct.Header("content-type"));
      if (stream) {
        auto want = Events(direct.body);
        ASSERT_EQ(want.size(), 13u) << direct.body;  // 12 tokens and [DONE]
        EXPECT_EQ(Events(proxied.body), want) << "case " << i;
      } else {
        json a = json::parse(direct.body), b = json::parse(proxied.body);
        for (json* j : {&a, &b}) {
          j->erase("created");
          (*j)["usage"].erase("prompt_tokens_details");  // D's prefix cache differs
        }
        EXPECT_EQ(b, a) << "case " << i;
      }
    }
  }
  // The prefill instance got each request as a max_tokens=1 copy.
  EXPECT_GE(Finished(p), 6);
}

// cache_aware: the turns of a conversation (each prompt extends the last)
// go to the instance that holds the prefix, in both roles, and hit its
// prefix cache; a different conversation may go elsewhere.
TEST(ProxyE2eTest, CacheAwareKeepsAConversationOnTheInstanceWithItsPrefix) {
  Proc p0 = Serve(), p1 = Serve(), d0 = Serve(), d1 = Serve();
  Proc proxy = Proxy({&p0, &p1}, {&d0, &d1}, "cache_aware");
  std::mt19937 rng(7);
  std::vector<int32_t> conversation;
  constexpr int kTurns = 6;
  for (int turn = 0; turn < kTurns; ++turn) {
    for (int k = 0; k < 40; ++k) conversation.push_back(3 + rng() % 500);
    auto r = Post(proxy.port, "/v1/completions", Completion(conversation, 4, false).dump());
    ASSERT_EQ(r.status, 200) << r.body;
  }
  double on_d0 = Finished(d0), on_d1 = Finished(d1);
  double on_p0 = Finished(p0), on_p1 = Finished(p1);
  EXPECT_EQ(on_d0 + on_d1, kTurns);
  EXPECT_EQ(std::max(on_d0, on_d1), kTurns) << "d0 " << on_d0 << ", d1 " << on_d1;
  EXPECT_EQ(std::max(on_p0, on_p1), kTurns) << "p0 " << on_p0 << ", p1 " << on_p1;
  const Proc& holder = on_d0 > on_d1 ? d0 : d1;
  // Every turn after the first reuses the blocks of the turns before.
  EXPECT_GE(Counter(holder, "vllm:prefix_cache_hits_total"), 16 * (kTurns - 1));
}

// Instances join and leave through the admin API while clients keep
// sending: nothing fails; a removed instance finishes what it has in flight
// (a long stream started on it runs to its end) and gets nothing new.
TEST(ProxyE2eTest, MembershipChangesUnderLoadFailNoRequest) {
  Proc p0 = Serve(), p1 = Serve(), d0 = Serve(), d1 = Serve();
  Proc proxy = Proxy({&p0}, {&d0}, "least_loaded");
  // A long stream, on d0 (the only decode instance yet).
  constexpr int kLongTokens = 3000;
  std::promise<http::ClientResponse> long_done;
  std::thread long_stream([&] {
    long_done.set_value(Post(proxy.port, "/v1/completions",
                             Completion({5, 6, 7, 8}, kLongTokens, true).dump()));
  });
  Load load(proxy.port, 4);
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(Admin(proxy.port, "add", "decode", d1), 200);
  ASSERT_EQ(Admin(proxy.port, "add", "prefill", p1), 200);
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(Admin(proxy.port, "remove", "decode", d0), 200);
  ASSERT_EQ(Admin(proxy.port, "remove", "prefill", p0), 200);
  json st = Status(proxy.port);
  const json* d0_status = FindInstance(st, d0);
  auto long_f = long_done.get_future();
  bool long_still_running = long_f.wait_for(0s) != std::future_status::ready;
  if (long_still_running) {
    // Draining: still a member while the long stream runs on it.
    ASSERT_NE(d0_status, nullptr) << st.dump();
    EXPECT_TRUE((*d0_status)["draining"].get<bool>());
    EXPECT_GE((*d0_status)["in_flight_requests"].get<int>(), 1);
  }
  // Drained: it leaves the proxy once its last request finished.
  for (int i = 0; i < 200 && FindInstance(Status(proxy.port), d0); ++i) std::this_thread::sleep_for(25ms);
  st = Status(proxy.port);
  EXPECT_EQ(FindInstance(st, d0), nullptr) << st.dump();
  EXPECT_EQ(FindInstance(st, p0), nullptr) << st.dump();
  double d0_finished = Finished(d0), p0_finished = Finished(p0);
  int ok_before = load.ok();
  std::this_thread::sleep_for(500ms);
  load.Stop();
  long_stream.join();

  std::printf("load: %d ok, %d failed; long stream still running at removal: %d\n", load.ok(),
              load.failed(), long_still_running);
  EXPECT_EQ(load.failed(), 0) << load.last_error();
  EXPECT_EQ(load.broken_streams(), 0);
  EXPECT_GT(load.ok() - ok_before, 10);  // traffic went on, on the new instances
  EXPECT_EQ(Finished(d0), d0_finished);  // nothing new reached the removed ones
  EXPECT_EQ(Finished(p0), p0_finished);
  EXPECT_GT(Finished(d1), 0);
  EXPECT_GT(Finished(p1), 0);
  auto long_r = long_f.get();
  ASSERT_EQ(long_r.status, 200);
  auto ev = Events(long_r.body);
  EXPECT_EQ(ev.size(), size_t(kLongTokens) + 1);  // every token, then [DONE]
  EXPECT_EQ(long_r.body.find("\"error\""), std::string::npos);
}

// kill -9 of a prefill and a decode instance under load: every request
// succeeds on the peers, except streams that the dead decode instance had
// begun, which end with an error event (never hang).
TEST(ProxyE2eTest, KillOfAnInstanceUnderLoadFailsNoRequest) {
  Proc p0 = Serve(), p1 = Serve(), d0 = Serve(), d1 = Serve();
  Proc proxy = Proxy({&p0, &p1}, {&d0, &d1});
  Load load(proxy.port, 4, 24);
  std::this_thread::sleep_for(500ms);
  ASSERT_GT(Finished(d0), 0);
  ASSERT_GT(Finished(p0), 0);
  d0.proc->Kill();
  p0.proc->Kill();
  int ok_at_kill = load.ok();
  std::this_thread::sleep_for(1000ms);
  load.Stop();
  std::printf("load: %d ok (%d after the kill), %d failed, %d streams ended by an error event\n",
              load.ok(), load.ok() - ok_at_kill, load.failed(), load.broken_streams());
  EXPECT_EQ(load.failed(), 0) << load.last_error();
  EXPECT_LE(load.broken_streams(), 4);  // at most the streams running on d0 then
  EXPECT_GT(load.ok() - ok_at_kill, 10);
  json st = Status(proxy.port);
  for (const Proc* dead : {&d0, &p0}) {
    const json* i = FindInstance(st, *dead);
    ASSERT_NE(i, nullptr);
    EXPECT_FALSE((*i)["healthy"].get<bool>()) << st.dump();
  }
  EXPECT_GE(st["recent_errors"].size(), 1u);
  // The kill was felt (requests on or sent to the dead instances failed)
  // and absorbed by retries on the peers.
  for (const char* role : {"prefill", "decode"}) {
    double failures = ProxyMetric(proxy.port, fmt::format(
                                                  "crescent_proxy_upstream_failures_total{{role=\"{}\"}}", role));
    double retries = ProxyMetric(proxy.port, fmt::format("crescent_proxy_retries_total{{role=\"{}\"}}", role));
    std::printf("%s: %.0f upstream failures, %.0f retries\n", role, failures, retries);
    EXPECT_GE(failures, 1) << role;
    EXPECT_GE(retries, 1) << role;
  }
  auto health = http::Client("127.0.0.1", proxy.port).Get("/health");
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health->status, 200);  // d1 is in rotation
}

// A decode instance killed mid-stream: the client's stream ends with an
// OpenAI error event and [DONE] (never hangs), and the next request goes to
// the peer.
TEST(ProxyE2eTest, DecodeKilledMidStreamEndsTheStreamWithAnErrorEvent) {
  Proc p0 = Serve(), d0 = Serve(), d1 = Serve();
  Proc proxy = Proxy({&p0}, {&d0});
  http::ClientOptions o;
  o.timeout = 10s;
  http::Client client("127.0.0.1", proxy.port, o);
  std::string body;
  bool killed = false;
  auto t0 = std::chrono::steady_clock::now();
  auto r = client.SendStreaming(
      {http::Method::kPost, "/v1/completions", Completion({5, 6, 7, 8}, 3500, true).dump(),
       "application/json", {}},
      [&](std::string_view d) {
        body.append(d);
        if (!killed && body.size() > 4096) {  // well into the stream
          killed = true;
          d0.proc->Kill();
        }
        return true;
      });
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(killed);
  EXPECT_EQ(r->status, 200);
  EXPECT_LT(seconds, 8);
  auto ev = Events(body);
  ASSERT_GE(ev.size(), 2u);
  EXPECT_LT(ev.size(), 3501u);  // it did not run to its end
  EXPECT_NE(ev[ev.size() - 2].find("\"error\""), std::string::npos) << ev[ev.size() - 2];
  EXPECT_EQ(ev.back(), "data: [DONE]");
  EXPECT_EQ(ProxyMetric(proxy.port, "crescent_proxy_streams_broken_total"), 1);
  ASSERT_EQ(Admin(proxy.port, "add", "decode", d1), 200);
  auto next = Post(proxy.port, "/v1/completions", Completion({5, 6, 7, 8}, 4, false).dump());
  EXPECT_EQ(next.status, 200) << next.body;
}

}  // namespace
}  // namespace crescent::proxy
