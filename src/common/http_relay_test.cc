// http::StreamClient as a relay's upstream side: exchanges on the client
// connection's own io thread (relay_to), Cancel() after completion, and
// chunks that arrived together handed on together.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "common/http.h"

namespace crescent::http {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<Server> Start(std::function<void(Server&)> routes) {
  auto s = std::make_unique<Server>(ServerOptions{});
  routes(*s);
  EXPECT_TRUE(s->Start().ok());
  return s;
}

// An upstream that streams `n` events, all written at once.
std::unique_ptr<Server> Upstream(int n) {
  return Start([n](Server& s) {
    s.HandleAsync(Method::kGet, "/s", [n](Request, std::shared_ptr<ResponseWriter> w) {
      w->BeginStream(200, "text/event-stream");
      for (int i = 0; i < n; ++i) w->WriteEvent("e" + std::to_string(i));
      w->End();
    });
  });
}

// With relay_to, every callback runs on the thread that runs the client's
// handler (the server's io thread): a relayed chunk changes no thread.
TEST(HttpRelayTest, RelayedExchangeRunsOnTheClientConnectionsThread) {
  auto upstream = Upstream(3);
  StreamClient sc;
  std::atomic<int> wrong_thread{0};
  auto proxy = Start([&](Server& s) {
    s.HandleAsync(Method::kGet, "/r", [&, port = upstream->port()](Request, std::shared_ptr<ResponseWriter> w) {
      auto me = std::this_thread::get_id();
      auto check = [&wrong_thread, me] {
        if (std::this_thread::get_id() != me) ++wrong_thread;
      };
      sc.Start("127.0.0.1", port, {Method::kGet, "/s", {}, {}, {}},
               {[w, check](int status, const Headers&) {
                  check();
                  w->BeginStream(status, "text/event-stream");
                  return true;
                },
                [w, check](std::string_view d) {
                  check();
                  return w->Write(std::string(d));
                },
                [w, check](Status) {
                  check();
                  w->End();
                }},
               w.get());
    });
  });
  Client c("127.0.0.1", proxy->port());
  for (int i = 0; i < 5; ++i) {
    auto r = c.Get("/r");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->body, "data: e0\n\ndata: e1\n\ndata: e2\n\n");
  }
  EXPECT_EQ(wrong_thread.load(), 0);
  EXPECT_EQ(upstream->open_connections(), 1u);  // pooled and reused
}

// A late Cancel() (e.g. a client that leaves just after its response
// completed) must not close the connection, now idle in the pool.
TEST(HttpRelayTest, CancelAfterCompletionLeavesThePooledConnectionAlone) {
  auto upstream = Upstream(2);
  StreamClient sc;
  std::promise<Status> done;
  auto h = sc.Start("127.0.0.1", upstream->port(), {Method::kGet, "/s", {}, {}, {}},
                    {nullptr, nullptr, [&](Status s) { done.set_value(s); }});
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  ASSERT_TRUE(f.get().ok());
  h->Cancel();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(upstream->open_connections(), 1u);
  std::promise<Status> again;
  sc.Start("127.0.0.1", upstream->port(), {Method::kGet, "/s", {}, {}, {}},
           {nullptr, nullptr, [&](Status s) { again.set_value(s); }});
  auto g = again.get_future();
  ASSERT_EQ(g.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(g.get().ok());
  EXPECT_EQ(upstream->open_connections(), 1u);  // the same connection carried both
}

// Chunks already received together reach on_data in one call (a relay then
// forwards them with one write), not one call per chunk.
TEST(HttpRelayTest, ChunksThatArriveTogetherAreHandedOnTogether) {
  constexpr int kEvents = 200;
  auto upstream = Upstream(kEvents);
  StreamClient sc;
  std::promise<Status> done;
  std::string got;
  int calls = 0;
  sc.Start("127.0.0.1", upstream->port(), {Method::kGet, "/s", {}, {}, {}},
           {nullptr,
            [&](std::string_view d) {
              ++calls;
              got.append(d);
              return true;
            },
            [&](Status s) { done.set_value(s); }});
  auto f = done.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  ASSERT_TRUE(f.get().ok());
  std::string want;
  for (int i = 0; i < kEvents; ++i) want += "data: e" + std::to_string(i) + "\n\n";
  EXPECT_EQ(got, want);
  // The upstream writes them in a few socket writes (see Session::Flush).
  EXPECT_LE(calls, 20) << "on_data calls for " << got.size() << " bytes";
}

// A slow client holds a fast upstream back: with `pause`, the relay's queue
// for its client stays near the high water mark instead of taking in the
// whole upstream response.
TEST(HttpRelayTest, PauseHoldsAFastUpstreamBackForASlowClient) {
  constexpr size_t kPiece = 64 * 1024, kPieces = 256;  // 16 MiB
  constexpr size_t kHigh = 128 * 1024, kLow = 32 * 1024;
  auto upstream = Start([](Server& s) {
    s.HandleAsync(Method::kGet, "/big", [](Request, std::shared_ptr<ResponseWriter> w) {
      w->BeginStream(200, "application/octet-stream");
      // Produced as the socket takes it, so that the upstream itself does
      // not buffer: only the relay could.
      auto next = std::make_shared<std::function<void(size_t)>>();
      *next = [w, next](size_t i) {
        if (i == kPieces) {
          w->End();
          *next = nullptr;
          return;
        }
        w->Write(std::string(kPiece, static_cast<char>('a' + i % 26)));
        w->OnWritable(kPiece, [next, i] {
          if (*next) (*next)(i + 1);
        });
      };
      (*next)(0);
    });
  });
  StreamClient sc;
  std::atomic<size_t> max_queued{0};
  auto proxy = Start([&](Server& s) {
    s.HandleAsync(Method::kGet, "/r", [&, port = upstream->port()](Request, std::shared_ptr<ResponseWriter> w) {
      StreamCallbacks cb;
      cb.on_head = [w](int status, const Headers&) {
        w->BeginStream(status, "application/octet-stream");
        return true;
      };
      cb.on_data = [w, &max_queued](std::string_view d) {
        bool ok = w->Write(std::string(d));
        size_t q = w->buffered_bytes();
        if (q > max_queued) max_queued = q;
        return ok;
      };
      cb.on_done = [w](Status) { w->End(); };
      cb.pause = [w](std::function<void()> resume) {
        if (w->buffered_bytes() <= kHigh) return false;
        w->OnWritable(kLow, std::move(resume));
        return true;
      };
      sc.Start("127.0.0.1", port, {Method::kGet, "/big", {}, {}, {}}, std::move(cb), w.get());
    });
  });
  Client c("127.0.0.1", proxy->port());
  size_t got = 0;
  bool intact = true;
  auto r = c.SendStreaming({Method::kGet, "/r", {}, {}, {}}, [&](std::string_view d) {
    for (size_t k = 0; k < d.size(); ++k)
      intact &= d[k] == static_cast<char>('a' + (got + k) / kPiece % 26);
    got += d.size();
    std::this_thread::sleep_for(200us);  // a slow reader
    return true;
  });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(got, kPiece * kPieces);
  EXPECT_TRUE(intact);
  // One read (16 KiB) may land past the mark before the pause.
  EXPECT_LE(max_queued.load(), kHigh + 16 * 1024 + 64) << "bytes queued for the client";
}

}  // namespace
}  // namespace crescent::http
