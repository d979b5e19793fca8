// The proxy end to end against fake vLLM-like instances that are real HTTP
// servers in this process: the P->D flow, streaming, failover, health,
// admin API, drain, metrics.
#include "proxy/proxy.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <set>

#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/http.h"
#include "proxy/fake_instance.h"

namespace crescent::proxy {
namespace {

using nlohmann::json;
using testing::FakeBehavior;
using testing::FakeInstance;
using namespace std::chrono_literals;

std::unique_ptr<FakeInstance> Fake(std::string name) {
  auto f = FakeInstance::Start(std::move(name));
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  return std::move(*f);
}

ProxyOptions Options(const std::vector<FakeInstance*>& prefill,
                     const std::vector<FakeInstance*>& decode) {
  ProxyOptions o;
  o.host = "127.0.0.1";
  o.port = 0;
  for (auto* p : prefill) o.prefill.push_back(p->address());
  for (auto* d : decode) o.decode.push_back(d->address());
  o.probe_interval = 100ms;
  o.probe_timeout = 300ms;
  o.upstream_timeout = 5s;
  o.model_name = "fake-model";
  return o;
}

std::unique_ptr<Proxy> StartProxy(ProxyOptions o) {
  auto p = Proxy::Start(std::move(o));
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return std::move(*p);
}

http::ClientResponse Post(uint16_t port, std::string path, std::string body,
                          http::Headers headers = {}) {
  http::Client c("127.0.0.1", port);
  http::ClientRequest r{http::Method::kPost, std::move(path), std::move(body), "application/json",
                        std::move(headers)};
  auto resp = c.Send(r);
  EXPECT_TRUE(resp.ok()) << resp.status().ToString();
  return resp.ok() ? *resp : http::ClientResponse{};
}

http::ClientResponse Get(uint16_t port, std::string path) {
  http::Client c("127.0.0.1", port);
  auto resp = c.Get(std::move(path));
  EXPECT_TRUE(resp.ok()) << resp.status().ToString();
  return resp.ok() ? *resp : http::ClientResponse{};
}

std::string ServedBy(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  return j.is_object() ? j.value("served_by", "") : "";
}

// Events of an SSE body, without "data: ".
std::vector<std::string> Events(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    size_t end = body.find("\n\n", pos);
    out.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end;
  }
  return out;
}

const char* kCompletion = R"({"model":"fake-model","prompt":"San Francisco is a","max_tokens":5})";
const char* kStream =
    R"({"model":"fake-model","prompt":"San Francisco is a","max_tokens":5,"stream":true,"stream_options":{"include_usage":true},"min_tokens":2})";

TEST(ProxyTest, PrefillGetsOneTokenCopyThenDecodeAnswersAsVanilla) {
  auto p = Fake("p0"), d = Fake("d0");
  auto proxy = StartProxy(Options({p.get()}, {d.get()}));
  auto resp = Post(proxy->port(), "/v1/completions", kStream);
  ASSERT_EQ(resp.status, 200);
  EXPECT_EQ(resp.Header("content-type").value_or(""), "text/event-stream");
  // Byte for byte what the decode instance itself answers.
  auto direct = Post(d->port(), "/v1/completions", kStream);
  EXPECT_EQ(resp.body, direct.body);
  auto events = Events(resp.body);
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events.back(), "[DONE]");

  auto pre = p->Seen();
  ASSERT_EQ(pre.size(), 1u);
  json pj = json::parse(pre[0].body);
  EXPECT_EQ(pj["max_tokens"], 1);
  EXPECT_EQ(pj["stream"], false);
  EXPECT_FALSE(pj.contains("stream_options"));
  EXPECT_FALSE(pj.contains("min_tokens"));
  EXPECT_EQ(pj["prompt"], "San Francisco is a");
  auto dec = d->Seen();
  ASSERT_GE(dec.size(), 1u);
  EXPECT_EQ(dec[0].body, kStream);  // the original, untouched
  EXPECT_FALSE(dec[0].request_id.empty());
  EXPECT_EQ(dec[0].request_id, pre[0].request_id);
}

TEST(ProxyTest, NonStreamingAndChatRequests) {
  auto p = Fake("p0"), d = Fake("d0");
  auto proxy = StartProxy(Options({p.get()}, {d.get()}));
  auto resp = Post(proxy->port(), "/v1/completions", kCompletion);
  ASSERT_EQ(resp.status, 200);
  EXPECT_EQ(resp.body, Post(d->port(), "/v1/completions", kCompletion).body);
  EXPECT_TRUE(resp.Header("content-length").has_value());

  std::string chat =
      R"({"model":"fake-model","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":3})";
  auto c = Post(proxy->port(), "/v1/chat/completions", chat);
  ASSERT_EQ(c.status, 200);
  EXPECT_EQ(json::parse(c.body)["choices"][0]["message"]["content"], "t0 t1 t2 ");
  json pj = json::parse(p->Seen().back().body);
  EXPECT_EQ(pj["max_completion_tokens"], 1);
  EXPECT_EQ(pj["max_tokens"], 1);
}

TEST(ProxyTest, StreamArrivesAsItIsProduced) {
  auto p = Fake("p0"), d = Fake("d0");
  FakeBehavior slow;
  slow.token_interval = 40ms;
  d->SetBehavior(slow);
  auto proxy = StartProxy(Options({p.get()}, {d.get()}));
  http::StreamClient sc;
  std::promise<Status> done;
  std::vector<std::chrono::steady_clock::time_point> arrivals;
  http::ClientRequest r{http::Method::kPost, "/v1/completions",
                        R"({"prompt":"x","max_tokens":6,"stream":true})", "application/json", {}};
  auto t0 = std::chrono::steady_clock::now();
  sc.Start("127.0.0.1", proxy->port(), r,
           {nullptr, [&](std::string_view) {
              arrivals.push_back(std::chrono::steady_clock::now());
              return true;
            },
            [&](Status s) { done.set_value(s); }});
  ASSERT_TRUE(done.get_future().get().ok());
  ASSERT_GE(arrivals.size(), 4u);
  // Tokens reach the client as they are produced (40 ms apart), not in one
  // piece at the end: the arrivals spread over most of the stream's life.
  (void)t0;
  EXPECT_GT(arrivals.back() - arrivals.front(), 150ms);
}

TEST(ProxyTest, ProxyAnswersModelsHealthAndBadRequests) {
  auto d = Fake("d0");
  auto proxy = StartProxy(Options({}, {d.get()}));
  auto models = Get(proxy->port(), "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(json::parse(models.body)["data"][0]["id"], "fake-model");
  EXPECT_EQ(Get(proxy->port(), "/health").status, 200);
  auto bad = Post(proxy->port(), "/v1/completions", "not json");
  EXPECT_EQ(bad.status, 400);
  EXPECT_TRUE(json::parse(bad.body)["error"]["message"].is_string());
  // No prefill instance at all: the decode instance prefills itself.
  EXPECT_EQ(Post(proxy->port(), "/v1/completions", kCompletion).status, 200);
}

TEST(ProxyTest, NoDecodeInstanceIs503InOpenAIFormat) {
  auto p = Fake("p0");
  auto proxy = StartProxy(Options({p.get()}, {}));
  auto resp = Post(proxy->port(), "/v1/completions", kCompletion);
  EXPECT_EQ(resp.status, 503);
  json e = json::parse(resp.body);
  EXPECT_EQ(e["error"]["code"], 503);
  EXPECT_NE(e["error"]["message"].get<std::string>().find("no decode instance"), std::string::npos);
  EXPECT_EQ(Get(proxy->port(), "/health").status, 503);
}

TEST(ProxyTest, FailedPrefillIsRetriedThenSkipped) {
  auto p0 = Fake("p0"), p1 = Fake("p1"), d = Fake("d0");
  FakeBehavior broken;
  broken.inference_status = 500;
  p0->SetBehavior(broken);
  auto proxy = StartProxy(Options({p0.get(), p1.get()}, {d.get()}));
  for (int i = 0; i < 4; ++i) EXPECT_EQ(Post(proxy->port(), "/v1/completions", kCompletion).status, 200);
  EXPECT_EQ(p1->inference_requests(), 4u);  // every request ended up prefilled by p1
  // Both prefill instances broken: the decode instance prefills itself.
  p1->SetBehavior(broken);
  auto resp = Post(proxy->port(), "/v1/completions", kCompletion);
  EXPECT_EQ(resp.status, 200);
  auto metrics = Get(proxy->port(), "/metrics").body;
  EXPECT_NE(metrics.find("crescent_proxy_prefill_skipped_total 1"), std::string::npos) << metrics;
}

TEST(ProxyTest, PrefillThatHangsWhileHealthyIsAbandonedAfterTheTimeout) {
  auto p0 = Fake("p0"), d = Fake("d0");
  FakeBehavior hang;
  hang.hang = true;  // /health still answers 200
  p0->SetBehavior(hang);
  auto o = Options({p0.get()}, {d.get()});
  o.prefill_timeout = 300ms;
  auto proxy = StartProxy(o);
  auto t0 = std::chrono::steady_clock::now();
  auto resp = Post(proxy->port(), "/v1/completions", kCompletion);
  EXPECT_EQ(resp.status, 200);
  EXPECT_EQ(ServedBy(resp.body), "d0");
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 2s);  // not the 5 s upstream timeout
  json st = json::parse(Get(proxy->port(), "/status").body);
  EXPECT_NE(st["recent_errors"].dump().find("unanswered after 300 ms"), std::string::npos) << st.dump();
}

TEST(ProxyTest, DeadDecodeBeforeFirstByteIsRetriedElsewhere) {
  auto p = Fake("p0"), d0 = Fake("d0"), d1 = Fake("d1");
  auto proxy = StartProxy(Options({p.get()}, {d0.get(), d1.get()}));
  d0->Die();
  for (int i = 0; i < 6; ++i) {
    auto resp = Post(proxy->port(), "/v1/completions", i % 2 ? kStream : kCompletion);
    ASSERT_EQ(resp.status, 200) << resp.body;
  }
  json st = json::parse(Get(proxy->port(), "/status").body);
  for (const auto& i : st["instances"])
    if (i["instance"] == d0->address()) {
      EXPECT_FALSE(i["healthy"].get<bool>());
    }
  EXPECT_FALSE(st["recent_errors"].empty());
}

TEST(ProxyTest, DecodeErrorIsRetriedAndRelayedWhenEveryInstanceFails) {
  auto d0 = Fake("d0"), d1 = Fake("d1");
  FakeBehavior broken;
  broken.inference_status = 500;
  d0->SetBehavior(broken);
  auto proxy = StartProxy(Options({}, {d0.get(), d1.get()}));
  for (int i = 0; i < 4; ++i) {
    auto resp = Post(proxy->port(), "/v1/completions", kCompletion);
    EXPECT_EQ(resp.status, 200);
    EXPECT_EQ(ServedBy(resp.body), "d1");
  }
  d1->SetBehavior(broken);
  auto resp = Post(proxy->port(), "/v1/completions", kCompletion);
  EXPECT_EQ(resp.status, 500);
  EXPECT_NE(resp.body.find("injected failure"), std::string::npos);  // the instance's own error
}

TEST(ProxyTest, HungDecodeLeavesRotationAndItsRequestMovesOn) {
  auto d0 = Fake("d0"), d1 = Fake("d1");
  auto proxy = StartProxy(Options({}, {d0.get(), d1.get()}));
  FakeBehavior hung;
  hung.hang = true;
  hung.health_status = 503;
  d0->SetBehavior(hung);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 2; ++i) {  // one of the two lands on d0 unless probes were faster
    auto resp = Post(proxy->port(), "/v1/completions", kCompletion);
    EXPECT_EQ(resp.status, 200);
    EXPECT_EQ(ServedBy(resp.body), "d1");
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);  // moved by the probes, not the 5 s timeout
  // It comes back when it recovers.
  d0->SetBehavior({});
  std::this_thread::sleep_for(500ms);
  std::set<std::string> served;
  for (int i = 0; i < 4; ++i) served.insert(ServedBy(Post(proxy->port(), "/v1/completions", kCompletion).body));
  EXPECT_EQ(served.size(), 2u);
}

TEST(ProxyTest, DeathMidStreamEndsTheStreamWithAnErrorEvent) {
  auto d0 = Fake("d0");
  FakeBehavior dying;
  dying.token_interval = 5ms;
  dying.die_after_events = 3;
  d0->SetBehavior(dying);
  auto proxy = StartProxy(Options({}, {d0.get()}));
  auto resp = Post(proxy->port(), "/v1/completions", R"({"prompt":"x","max_tokens":10,"stream":true})");
  EXPECT_EQ(resp.status, 200);
  auto events = Events(resp.body);
  ASSERT_EQ(events.size(), 5u) << resp.body;  // 3 tokens, the error, [DONE]
  json err = json::parse(events[3]);
  EXPECT_EQ(err["error"]["code"], 502);
  EXPECT_NE(err["error"]["message"].get<std::string>().find("mid-stream"), std::string::npos);
  EXPECT_EQ(events[4], "[DONE]");
}

TEST(ProxyTest, ClientDisconnectCancelsTheUpstreamStream) {
  auto d0 = Fake("d0");
  FakeBehavior slow;
  slow.token_interval = 20ms;
  d0->SetBehavior(slow);
  auto proxy = StartProxy(Options({}, {d0.get()}));
  {
    http::StreamClient sc;
    std::promise<void> got;
    bool once = false;
    http::ClientRequest r{http::Method::kPost, "/v1/completions",
                          R"({"prompt":"x","max_tokens":1000,"stream":true})", "application/json", {}};
    auto h = sc.Start("127.0.0.1", proxy->port(), r,
                      {nullptr, [&](std::string_view) {
                         if (!once) got.set_value();
                         once = true;
                         return true;
                       },
                       nullptr});
    got.get_future().wait();
    EXPECT_EQ(d0->active_streams(), 1);
    h->Cancel();
  }
  for (int i = 0; i < 100 && d0->active_streams() > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(d0->active_streams(), 0);
  EXPECT_EQ(proxy->router().Instances()[0].in_flight_requests, 0);
}

http::Headers Key(std::string k) { return {{"X-API-Key", std::move(k)}}; }

TEST(ProxyTest, AdminApiIsOffWithoutKeyAndChecksTheKey) {
  auto d0 = Fake("d0"), d1 = Fake("d1");
  auto off = StartProxy(Options({}, {d0.get()}));
  std::string add = fmt::format(R"({{"type":"decode","instance":"{}"}})", d1->address());
  auto r = Post(off->port(), "/instances/add", add, Key("x"));
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("ADMIN_API_KEY"), std::string::npos);

  auto o = Options({}, {d0.get()});
  o.admin_api_key = "s3cret";
  auto on = StartProxy(o);
  EXPECT_EQ(Post(on->port(), "/instances/add", add).status, 401);
  EXPECT_EQ(Post(on->port(), "/instances/add", add, Key("s3cret-not")).status, 403);
  EXPECT_EQ(Post(on->port(), "/instances/add", add, Key("s3cre")).status, 403);
  EXPECT_EQ(Post(on->port(), "/instances/add", R"({"type":"middle","instance":"a:1"})", Key("s3cret")).status, 400);
  // An address where nothing answers /v1/models is refused.
  auto gone = Post(on->port(), "/instances/add", R"({"type":"decode","instance":"127.0.0.1:1"})", Key("s3cret"));
  EXPECT_EQ(gone.status, 400);
  EXPECT_NE(gone.body.find("/v1/models"), std::string::npos);
  ASSERT_EQ(Post(on->port(), "/instances/add", add, Key("s3cret")).status, 200);
  EXPECT_EQ(Post(on->port(), "/instances/add", add, Key("s3cret")).status, 409);
  json st = json::parse(Get(on->port(), "/status").body);
  EXPECT_EQ(st["decode_node_count"], 2);
  std::set<std::string> served;
  for (int i = 0; i < 4; ++i) served.insert(ServedBy(Post(on->port(), "/v1/completions", kCompletion).body));
  EXPECT_EQ(served, (std::set<std::string>{"d0", "d1"}));
}

TEST(ProxyTest, RemoveDrainsInFlightStreamsThenForgetsTheInstance) {
  auto d0 = Fake("d0"), d1 = Fake("d1");
  FakeBehavior slow;
  slow.token_interval = 30ms;
  d0->SetBehavior(slow);
  auto o = Options({}, {d0.get()});
  o.admin_api_key = "k";
  auto proxy = StartProxy(o);
  auto in_flight = std::async(std::launch::async, [&] {
    return Post(proxy->port(), "/v1/completions", R"({"prompt":"x","max_tokens":10,"stream":true})");
  });
  for (int i = 0; i < 100 && d0->active_streams() == 0; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(Post(proxy->port(), "/instances/add",
                 fmt::format(R"({{"type":"decode","instance":"{}"}})", d1->address()), Key("k"))
                .status,
            200);
  auto rm = Post(proxy->port(), "/instances/remove",
                 fmt::format(R"({{"type":"decode","instance":"{}"}})", d0->address()), Key("k"));
  ASSERT_EQ(rm.status, 200) << rm.body;
  EXPECT_EQ(json::parse(rm.body)["in_flight_requests"], 1);
  // New requests go to d1 while d0 finishes its stream.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ServedBy(Post(proxy->port(), "/v1/completions", kCompletion).body), "d1");
  auto streamed = in_flight.get();
  EXPECT_EQ(streamed.status, 200);
  EXPECT_EQ(Events(streamed.body).size(), 11u);  // all 10 tokens and [DONE]: not cut
  json st = json::parse(Get(proxy->port(), "/status").body);
  EXPECT_EQ(st["decode_nodes"], json::array({d1->address()}));
}

TEST(ProxyTest, CacheAwareKeepsAConversationOnOneInstance) {
  auto d0 = Fake("d0"), d1 = Fake("d1"), d2 = Fake("d2");
  auto o = Options({}, {d0.get(), d1.get(), d2.get()});
  o.scheduling = PolicyKind::kCacheAware;
  auto proxy = StartProxy(o);
  std::string doc(2000, 'd');
  for (int c = 0; c < 3; ++c) {
    std::set<std::string> served;
    for (int turn = 0; turn < 4; ++turn) {
      json req = {{"prompt", fmt::format("{}{} question {}", c, doc, turn)}, {"max_tokens", 2}};
      served.insert(ServedBy(Post(proxy->port(), "/v1/completions", req.dump()).body));
    }
    EXPECT_EQ(served.size(), 1u) << "conversation " << c;
  }
}

TEST(ProxyTest, MetricsAndStatusReportTraffic) {
  auto p = Fake("p0"), d = Fake("d0");
  auto proxy = StartProxy(Options({p.get()}, {d.get()}));
  for (int i = 0; i < 3; ++i) Post(proxy->port(), "/v1/completions", kCompletion);
  auto m = Get(proxy->port(), "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_NE(m.body.find(R"(crescent_proxy_requests_total{endpoint="/v1/completions",outcome="ok"} 3)"),
            std::string::npos) << m.body;
  EXPECT_NE(m.body.find("crescent_proxy_first_byte_seconds_count 3"), std::string::npos);
  json st = json::parse(Get(proxy->port(), "/status").body);
  EXPECT_EQ(st["prefill_node_count"], 1);
  EXPECT_EQ(st["instances"][0]["requests_total"], 3);
  EXPECT_EQ(st["scheduling"], "round_robin");
}

}  // namespace
}  // namespace crescent::proxy
