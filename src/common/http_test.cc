// http::Server / Client / StreamClient over real loopback sockets.
#include "common/http.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <future>
#include <thread>

#include "common/testutil.h"

namespace crescent::http {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<Server> StartServer(std::function<void(Server&)> routes, ServerOptions o = {}) {
  auto s = std::make_unique<Server>(o);
  routes(*s);
  Status st = s->Start();
  EXPECT_TRUE(st.ok()) << st.ToString();
  return s;
}

TEST(HttpTest, SimpleRoutesQueryAndKeepAlive) {
  auto server = StartServer([](Server& s) {
    s.Handle(Method::kGet, "/echo", [](const Request& r) {
      return Response::Text(200, r.Query("k").value_or("-") + "|" + r.Query("x").value_or("-"));
    });
    s.Handle(Method::kPut, "/echo", [](const Request& r) {
      return Response::Text(201, std::to_string(r.body.size()) + ":" + r.Header("X-Tag").value_or(""));
    });
  });
  Client c("127.0.0.1", server->port());
  for (int i = 0; i < 5; ++i) {
    auto r = c.Get("/echo?k=" + UrlEncode("a/b c&d") + "&x=1");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "a/b c&d|1");
  }
  ClientRequest put{Method::kPut, "/echo", std::string(100000, 'z'), "application/octet-stream",
                    {{"X-Tag", "t1"}}};
  auto r = c.Send(put);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, 201);
  EXPECT_EQ(r->body, "100000:t1");
  // All of it over one kept-alive connection.
  EXPECT_EQ(server->open_connections(), 1u);
}

TEST(HttpTest, NotFoundMethodNotAllowedAndPrefixRoutes) {
  auto server = StartServer([](Server& s) {
    s.Handle(Method::kGet, "/v1/*", [](const Request& r) { return Response::Text(200, "v1:" + r.path); });
    s.Handle(Method::kGet, "/v1/models/*", [](const Request& r) { return Response::Text(200, "models"); });
  });
  Client c("127.0.0.1", server->port());
  EXPECT_EQ(c.Get("/v1/completions")->body, "v1:/v1/completions");
  EXPECT_EQ(c.Get("/v1/models/x")->body, "models");
  EXPECT_EQ(c.Get("/nothing")->status, 404);
  auto r = c.Post("/v1/x", "{}");
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->Header("allow").value_or(""), "GET");
}

TEST(HttpTest, BodyLimitGives413) {
  ServerOptions o;
  o.max_body_bytes = 1000;
  auto server = StartServer(
      [](Server& s) { s.Handle(Method::kPost, "/p", [](const Request&) { return Response::Text(200, "ok"); }); },
      o);
  Client c("127.0.0.1", server->port());
  EXPECT_EQ(c.Post("/p", std::string(1000, 'a'))->status, 200);
  auto r = c.Post("/p", std::string(1001, 'a'));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 413);
  EXPECT_NE(r->body.find("1000"), std::string::npos);
}

TEST(HttpTest, HandlerExceptionGives500) {
  auto server = StartServer([](Server& s) {
    s.Handle(Method::kGet, "/boom", [](const Request&) -> Response { throw std::runtime_error("kaput"); });
  });
  Client c("127.0.0.1", server->port());
  auto r = c.Get("/boom");
  EXPECT_EQ(r->status, 500);
  EXPECT_NE(r->body.find("kaput"), std::string::npos);
}

TEST(HttpTest, AsyncReplyFromAnotherThreadAndDroppedWriter) {
  std::vector<std::thread> workers;
  std::mutex mu;
  auto server = StartServer([&](Server& s) {
    s.HandleAsync(Method::kGet, "/later", [&](Request r, std::shared_ptr<ResponseWriter> w) {
      std::lock_guard lock(mu);
      workers.emplace_back([w] {
        std::this_thread::sleep_for(20ms);
        w->Send(Response::Json(200, R"({"ok":true})"));
      });
    });
    s.HandleAsync(Method::kGet, "/drop", [](Request, std::shared_ptr<ResponseWriter>) {});
  });
  Client c("127.0.0.1", server->port());
  auto r = c.Get("/later");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->body, R"({"ok":true})");
  EXPECT_EQ(r->Header("content-type").value_or(""), "application/json");
  auto d = c.Get("/drop");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->status, 500);
  // The connection is still usable afterwards.
  EXPECT_EQ(c.Get("/later")->status, 200);
  std::lock_guard lock(mu);
  for (auto& t : workers) t.join();
}

TEST(HttpTest, UnreachableServerNamesAddress) {
  uint16_t port = testing::FreePort();
  Client c("127.0.0.1", port);
  auto r = c.Get("/");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("cannot reach 127.0.0.1:" + std::to_string(port) +
                                      ": connection refused"),
            std::string::npos)
      << r.status().ToString();
}

TEST(HttpTest, SilentServerTimesOut) {
  std::shared_ptr<ResponseWriter> held;
  std::mutex mu;
  auto server = StartServer([&](Server& s) {
    s.HandleAsync(Method::kGet, "/hang", [&](Request, std::shared_ptr<ResponseWriter> w) {
      std::lock_guard lock(mu);
      held = w;
    });
  });
  ClientOptions o;
  o.timeout = 300ms;
  Client c("127.0.0.1", server->port(), o);
  auto t0 = std::chrono::steady_clock::now();
  auto r = c.Get("/hang");
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(r.status().message().find("GET /hang"), std::string::npos);
  EXPECT_LT(took, 2s);
  // The server noticed that the client left.
  for (int i = 0; i < 100 && !held->client_gone(); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(held->client_gone());
}

TEST(HttpTest, ClientSurvivesServerRestartOnSamePort) {
  auto routes = [](Server& s) { s.Handle(Method::kGet, "/", [](const Request&) { return Response::Text(200, "hi"); }); };
  auto server = StartServer(routes);
  uint16_t port = server->port();
  Client c("127.0.0.1", port);
  ASSERT_EQ(c.Get("/")->body, "hi");
  server.reset();
  EXPECT_EQ(c.Get("/").status().code(), StatusCode::kUnavailable);
  ServerOptions o;
  o.port = port;
  server = StartServer(routes, o);
  auto r = c.Get("/");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, "hi");
}

// A streaming handler: events written from another thread arrive one by one
// (the second is only written after the client saw the first).
TEST(HttpTest, SseEventsArriveAsWritten) {
  std::promise<void> first_seen;
  auto first_seen_f = first_seen.get_future().share();
  std::thread producer;
  auto server = StartServer([&](Server& s) {
    s.HandleAsync(Method::kPost, "/stream", [&](Request, std::shared_ptr<ResponseWriter> w) {
      w->BeginStream(200, "text/event-stream");
      producer = std::thread([w, first_seen_f] {
        w->WriteEvent("one");
        first_seen_f.wait();
        w->WriteEvent("two\nlines");
        w->Write("data: [DONE]\n\n");
        w->End();
      });
    });
  });
  StreamClient sc;
  std::promise<Status> done;
  std::string got;
  int status = 0;
  std::string content_type;
  bool signalled = false;
  sc.Start("127.0.0.1", server->port(), {Method::kPost, "/stream", "{}", "application/json", {}},
           {[&](int s, const Headers& h) {
              status = s;
              for (auto& [k, v] : h)
                if (k == "content-type") content_type = v;
              return true;
            },
            [&](std::string_view d) {
              got.append(d);
              if (!signalled && got.find("data: one\n\n") != std::string::npos) {
                signalled = true;
                first_seen.set_value();
              }
              return true;
            },
            [&](Status s) { done.set_value(s); }});
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(f.get().ok());
  producer.join();
  EXPECT_EQ(status, 200);
  EXPECT_EQ(content_type, "text/event-stream");
  EXPECT_EQ(got, "data: one\n\ndata: two\ndata: lines\n\ndata: [DONE]\n\n");
}

// The blocking streaming call sees each event before the next is written.
TEST(HttpTest, BlockingStreamingClient) {
  std::promise<void> first_seen;
  auto first_seen_f = first_seen.get_future().share();
  std::thread producer;
  auto server = StartServer([&](Server& s) {
    s.HandleAsync(Method::kGet, "/s", [&](Request, std::shared_ptr<ResponseWriter> w) {
      w->BeginStream(200, "text/event-stream", {{"X-Request-Id", "r1"}});
      producer = std::thread([w, first_seen_f] {
        w->WriteEvent("a");
        first_seen_f.wait();
        w->WriteEvent("b");
        w->End();
      });
    });
  });
  Client c("127.0.0.1", server->port());
  std::string got;
  auto r = c.SendStreaming({Method::kGet, "/s", {}, {}, {}}, [&](std::string_view d) {
    got.append(d);
    if (got == "data: a\n\n") first_seen.set_value();
    return true;
  });
  producer.join();
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->Header("x-request-id").value_or(""), "r1");
  EXPECT_EQ(got, "data: a\n\ndata: b\n\n");
}

// The client going away reaches the handler (to abort its request).
TEST(HttpTest, ClientCancelFiresOnDisconnect) {
  std::promise<void> disconnected;
  std::shared_ptr<ResponseWriter> writer;
  std::mutex mu;
  auto server = StartServer([&](Server& s) {
    s.HandleAsync(Method::kGet, "/forever", [&](Request, std::shared_ptr<ResponseWriter> w) {
      w->BeginStream(200, "text/event-stream");
      w->WriteEvent("tick");
      w->OnDisconnect([&] { disconnected.set_value(); });
      std::lock_guard lock(mu);
      writer = w;
    });
  });
  StreamClient sc;
  std::promise<Status> done;
  std::promise<void> got_data;
  std::atomic<bool> once{false};
  auto h = sc.Start("127.0.0.1", server->port(), {Method::kGet, "/forever", {}, {}, {}},
                    {nullptr,
                     [&](std::string_view) {
                       if (!once.exchange(true)) got_data.set_value();
                       return true;
                     },
                     [&](Status s) { done.set_value(s); }});
  ASSERT_EQ(got_data.get_future().wait_for(5s), std::future_status::ready);
  h->Cancel();
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(f.get().code(), StatusCode::kCancelled);
  ASSERT_EQ(disconnected.get_future().wait_for(5s), std::future_status::ready);
  std::lock_guard lock(mu);
  EXPECT_TRUE(writer->client_gone());
  EXPECT_FALSE(writer->Write("late"));
}

// A relay, as `crescent proxy` does it: the handler streams an upstream's
// response to its own client as it arrives, with no thread of its own.
TEST(HttpTest, ProxyRelaysUpstreamStream) {
  auto upstream = StartServer([](Server& s) {
    s.HandleAsync(Method::kPost, "/v1/completions", [](Request r, std::shared_ptr<ResponseWriter> w) {
      w->BeginStream(200, "text/event-stream");
      std::thread([w, body = r.body] {
        for (int i = 0; i < 20; ++i) w->WriteEvent(body + std::to_string(i));
        w->End();
      }).detach();
    });
  });
  StreamClient upstream_client;
  uint16_t up_port = upstream->port();
  auto proxy = StartServer([&](Server& s) {
    s.HandleAsync(Method::kPost, "/v1/completions", [&](Request r, std::shared_ptr<ResponseWriter> w) {
      auto h = upstream_client.Start(
          "127.0.0.1", up_port, {Method::kPost, r.path, r.body, "application/json", {}},
          {[w](int status, const Headers&) {
             w->BeginStream(status, "text/event-stream");
             return true;
           },
           [w](std::string_view d) { return w->Write(std::string(d)); },
           [w](Status st) {
             if (!st.ok()) w->WriteEvent(R"({"error":")" + st.message() + "\"}");
             w->End();
           }});
      w->OnDisconnect([h] { h->Cancel(); });
    });
  });
  // Many concurrent relayed streams.
  constexpr int kStreams = 64;
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < kStreams; ++i) {
    clients.emplace_back([&, i] {
      Client c("127.0.0.1", proxy->port());
      auto r = c.Post("/v1/completions", "p" + std::to_string(i) + "-");
      std::string want;
      for (int k = 0; k < 20; ++k) want += "data: p" + std::to_string(i) + "-" + std::to_string(k) + "\n\n";
      if (r.ok() && r->status == 200 && r->body == want) ++ok;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), kStreams);
}

// `crescent serve` must hold >= 1,000 concurrent streaming connections:
// 1,000 SSE streams open at once, fed from one producer thread.
TEST(HttpTest, ThousandConcurrentStreams) {
  constexpr int kStreams = 1000, kEvents = 5;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::shared_ptr<ResponseWriter>> writers;
  ServerOptions o;
  o.io_threads = 2;
  auto server = StartServer(
      [&](Server& s) {
        s.HandleAsync(Method::kGet, "/sse", [&](Request, std::shared_ptr<ResponseWriter> w) {
          w->BeginStream(200, "text/event-stream");
          std::lock_guard lock(mu);
          writers.push_back(std::move(w));
          cv.notify_all();
        });
      },
      o);
  StreamClient client;
  std::vector<std::string> bodies(kStreams);
  std::atomic<int> done{0}, ok{0};
  std::vector<std::shared_ptr<StreamHandle>> handles;
  for (int i = 0; i < kStreams; ++i) {
    handles.push_back(client.Start("127.0.0.1", server->port(), {Method::kGet, "/sse", {}, {}, {}},
                                   {nullptr,
                                    [&, i](std::string_view d) {
                                      bodies[i].append(d);
                                      return true;
                                    },
                                    [&](Status s) {
                                      if (s.ok()) ++ok;
                                      ++done;
                                    }}));
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 30s, [&] { return writers.size() == size_t(kStreams); }))
        << writers.size() << " streams open";
  }
  EXPECT_EQ(server->open_connections(), size_t(kStreams));
  for (int e = 0; e < kEvents; ++e)
    for (auto& w : writers) EXPECT_TRUE(w->WriteEvent("event " + std::to_string(e)));
  for (auto& w : writers) w->End();
  for (int i = 0; i < 3000 && done < kStreams; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(ok.load(), kStreams);
  std::string want;
  for (int e = 0; e < kEvents; ++e) want += "data: event " + std::to_string(e) + "\n\n";
  int complete = 0;
  for (const auto& b : bodies) complete += b == want;
  EXPECT_EQ(complete, kStreams);
}

TEST(HttpTest, IdleKeepAliveConnectionsAreClosed) {
  ServerOptions o;
  o.idle_timeout = 200ms;
  auto server = StartServer(
      [](Server& s) { s.Handle(Method::kGet, "/", [](const Request&) { return Response::Text(200, "x"); }); }, o);
  Client c("127.0.0.1", server->port());
  ASSERT_EQ(c.Get("/")->status, 200);
  EXPECT_EQ(server->open_connections(), 1u);
  std::this_thread::sleep_for(600ms);
  EXPECT_EQ(server->open_connections(), 0u);
  EXPECT_EQ(c.Get("/")->status, 200);  // the client reconnects by itself
}

TEST(HttpTest, ListenOnBusyPortSaysSo) {
  auto a = StartServer([](Server&) {});
  ServerOptions o;
  o.port = a->port();
  Server b(o);
  Status st = b.Start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("cannot listen on 127.0.0.1:" + std::to_string(a->port())),
            std::string::npos)
      << st.ToString();
}

TEST(HttpTest, UrlCoding) {
  EXPECT_EQ(UrlEncode("a b/c\x01"), "a%20b%2Fc%01");
  EXPECT_EQ(UrlDecode("a%20b%2fc+d%zz%"), "a b/c d%zz%");
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  EXPECT_EQ(UrlDecode(UrlEncode(all)), all);
}

}  // namespace
}  // namespace crescent::http
