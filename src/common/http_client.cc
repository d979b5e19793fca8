// http::Client and http::StreamClient. One coroutine (Exchange) performs a
// request on a connection and feeds a Sink; the blocking Client runs it on
// the connection's private io_context in the caller's thread, the
// StreamClient on its own io threads.
#include <boost/asio.hpp>
#include <boost/asio/experimental/as_tuple.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "common/http.h"
#include "common/http_asio.h"
#include "common/http_internal.h"
#include "common/logging.h"

namespace crescent::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto kTuple = asio::experimental::as_tuple(asio::use_awaitable);

namespace {

// A connection to one host:port, reused while the server keeps it alive.
struct Conn {
  explicit Conn(asio::any_io_executor ex, std::shared_ptr<void> owner = nullptr)
      : io_owner(std::move(owner)), stream(std::move(ex)) {}
  // Keeps a foreign io_context (a Server's) alive; declared before `stream`
  // so that it is released after the socket.
  std::shared_ptr<void> io_owner;
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  bool connected = false;
};

// Where a paused exchange waits to be resumed (StreamCallbacks::pause).
struct Gate {
  explicit Gate(asio::any_io_executor ex) : timer(std::move(ex), Clock::time_point::max()) {}
  // Io thread only.
  void Open() {
    open = true;
    timer.cancel();
  }
  asio::steady_timer timer;
  bool open = true;
};

// A resume callback for `gate`, callable from any thread.
std::function<void()> Opener(const std::shared_ptr<Gate>& gate) {
  return [gate] { asio::post(gate->timer.get_executor(), [gate] { gate->Open(); }); };
}

// Where Exchange delivers a response.
struct Sink {
  std::function<bool(int, Headers&&)> on_head;
  std::function<bool(std::string_view)> on_data;
  // Optional flow control (StreamCallbacks::pause), with its gate.
  std::function<bool(std::function<void()>)> pause = nullptr;
  std::shared_ptr<Gate> gate = nullptr;
};

struct ExchangeResult {
  Status status;
  bool reusable = false;   // the connection may carry another request
  bool retryable = false;  // failed before any response byte on a reused connection
};

// Read buffer per connection (a few SSE events; memory per open stream).
constexpr size_t kReadBufferBytes = 8192;

std::string Describe(const ClientRequest& r) {
  return fmt::format("{} {}", MethodName(r.method), r.target.substr(0, 200));
}

Status ConnectError(const std::string& addr, beast::error_code ec, std::chrono::milliseconds t) {
  if (ec == beast::error::timeout)
    return UnavailableError(
        fmt::format("cannot reach {}: connect timed out after {} ms", addr, t.count()));
  std::string msg = ec.message();
  for (auto& c : msg) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return UnavailableError(fmt::format("cannot reach {}: {}", addr, msg));
}

// `per_op`: the timeout restarts for each read (streams); otherwise one
// deadline covers the whole exchange.
asio::awaitable<ExchangeResult> Exchange(Conn& c, const std::string& host, uint16_t port,
                                         const ClientRequest& request, const ClientOptions& opt,
                                         bool per_op, size_t body_limit, Sink& sink) {
  ExchangeResult res;
  const std::string addr = fmt::format("{}:{}", host, port);
  const auto deadline = Clock::now() + opt.timeout;
  auto arm = [&] {
    if (per_op) c.stream.expires_after(opt.timeout);
    else c.stream.expires_at(deadline);
  };
  const bool reused = c.connected;
  if (!c.connected) {
    c.buffer.clear();
    // Beast reads max(512, free capacity) bytes at a time: without room,
    // a burst of SSE events would take a read per 512 bytes.
    c.buffer.reserve(kReadBufferBytes);
    beast::error_code ec;
    auto ip = asio::ip::make_address(host, ec);
    std::vector<tcp::endpoint> eps;
    if (!ec) {
      eps.emplace_back(ip, port);
    } else {
      tcp::resolver resolver(c.stream.get_executor());
      auto [rec, results] = co_await resolver.async_resolve(host, std::to_string(port), kTuple);
      if (rec) {
        res.status = UnavailableError(
            fmt::format("cannot reach {}: cannot resolve '{}': {}", addr, host, rec.message()));
        co_return res;
      }
      for (const auto& r : results) eps.push_back(r.endpoint());
    }
    c.stream.expires_after(opt.connect_timeout);
    auto [cec, ep] = co_await c.stream.async_connect(eps, kTuple);
    if (cec) {
      res.status = ConnectError(addr, cec, opt.connect_timeout);
      co_return res;
    }
    c.stream.socket().set_option(tcp::no_delay(true), ec);
    c.connected = true;
  }

  bhttp::request<bhttp::string_body> req;
  req.method_string(MethodName(request.method));
  req.target(request.target);
  req.version(11);
  req.set(bhttp::field::host, addr);
  req.set(bhttp::field::user_agent, "crescent");
  if (!request.content_type.empty()) req.set(bhttp::field::content_type, request.content_type);
  for (const auto& [k, v] : request.headers) req.set(k, v);
  req.body() = request.body;
  req.prepare_payload();

  auto lost = [&](beast::error_code ec, bool got_bytes) {
    c.connected = false;
    if (ec == beast::error::timeout) {
      res.status = DeadlineExceededError(fmt::format(
          "{}: no response to {} within {} ms", addr, Describe(request), opt.timeout.count()));
    } else {
      res.retryable = reused && !got_bytes;
      res.status = UnavailableError(fmt::format("connection to {} lost during {}: {}", addr,
                                                Describe(request), ec.message()));
    }
    return res;
  };

  arm();
  auto [wec, wn] = co_await bhttp::async_write(c.stream, req, kTuple);
  if (wec) co_return lost(wec, false);

  bhttp::response_parser<bhttp::buffer_body> p;
  p.body_limit(body_limit);
  if (request.method == Method::kHead) p.skip(true);
  arm();
  auto [hec, hn] = co_await bhttp::async_read_header(c.stream, c.buffer, p, kTuple);
  if (hec) co_return lost(hec, hn > 0);
  {
    Headers headers;
    for (const auto& f : p.get()) headers.emplace_back(internal::Lower(f.name_string()), std::string(f.value()));
    if (!sink.on_head(p.get().result_int(), std::move(headers))) {
      c.connected = false;
      res.status = CancelledError("aborted by the response callback");
      co_return res;
    }
  }
  char buf[16384];
  while (!p.is_done()) {
    p.get().body().data = buf;
    p.get().body().size = sizeof(buf);
    arm();
    auto [rec, rn] = co_await bhttp::async_read_some(c.stream, c.buffer, p, kTuple);
    if (rec == bhttp::error::need_buffer) rec = {};
    // Then parse what is already buffered (no read): one call hands on
    // every chunk that arrived together (several SSE events when the
    // reader fell behind), so that a relay forwards them with one write,
    // not one per chunk: under load, this batching keeps the cost per
    // event from growing. (async_read_some itself stops after one chunk;
    // eager parsing there would wait for the buffer to fill.)
    if (!rec) {
      p.eager(true);
      while (!p.is_done() && c.buffer.size() > 0 && p.get().body().size > 0) {
        beast::error_code pec;
        size_t n = p.put(c.buffer.data(), pec);
        c.buffer.consume(n);
        if (pec == bhttp::error::need_more || pec == bhttp::error::need_buffer) break;
        if (pec) {
          rec = pec;
          break;
        }
        if (n == 0) break;
      }
      p.eager(false);
    }
    if (rec == bhttp::error::body_limit) {
      c.connected = false;
      res.status = ResourceExhaustedError(fmt::format(
          "{}: response to {} exceeds {} bytes", addr, Describe(request), body_limit));
      co_return res;
    }
    if (rec) co_return lost(rec, true);
    size_t got = sizeof(buf) - p.get().body().size;
    if (got > 0 && !sink.on_data(std::string_view(buf, got))) {
      c.connected = false;
      res.status = CancelledError("aborted by the data callback");
      co_return res;
    }
    if (got > 0 && sink.pause) {
      sink.gate->open = false;
      if (sink.pause(Opener(sink.gate))) {
        while (!sink.gate->open) co_await sink.gate->timer.async_wait(kTuple);
      }
      sink.gate->open = true;
    }
  }
  res.reusable = p.get().keep_alive();
  if (!res.reusable) c.connected = false;
  co_return res;
}

}  // namespace

// ------------------------------------------------------------------ Client

struct Client::Impl {
  struct SyncConn {
    asio::io_context ioc{1};
    Conn conn{ioc.get_executor()};
  };
  std::string host;
  uint16_t port;
  std::string address;
  ClientOptions options;
  std::mutex mu;
  std::vector<std::unique_ptr<SyncConn>> idle;  // guarded by mu
};

Client::Client(std::string host, uint16_t port, ClientOptions options)
    : impl_(std::make_unique<Impl>()) {
  impl_->host = std::move(host);
  impl_->port = port;
  impl_->address = fmt::format("{}:{}", impl_->host, port);
  impl_->options = options;
}

Client::~Client() = default;

const std::string& Client::address() const { return impl_->address; }

namespace {

// One request on a pooled connection of `im`, run in the calling thread.
template <typename Impl>
StatusOr<ClientResponse> RunSync(Impl& im, const ClientRequest& request, bool streaming,
                                 const std::function<bool(std::string_view)>* on_data) {
  for (int attempt = 0;; ++attempt) {
    std::unique_ptr<typename Impl::SyncConn> sc;
    {
      std::lock_guard lock(im.mu);
      if (!im.idle.empty()) {
        sc = std::move(im.idle.back());
        im.idle.pop_back();
      }
    }
    if (!sc) sc = std::make_unique<typename Impl::SyncConn>();
    ClientResponse resp;
    bool got_data = false;
    Sink sink{[&](int status, Headers&& h) {
                resp.status = status;
                resp.headers = std::move(h);
                if (auto cl = resp.Header("content-length"); cl && !on_data) {
                  size_t n = std::strtoull(cl->c_str(), nullptr, 10);
                  if (n <= im.options.max_response_bytes) resp.body.reserve(n);
                }
                return true;
              },
              [&](std::string_view d) {
                got_data = true;
                if (on_data) return (*on_data)(d);
                resp.body.append(d);
                return true;
              }};
    ExchangeResult result;
    size_t limit = streaming ? std::numeric_limits<uint64_t>::max() : im.options.max_response_bytes;
    asio::co_spawn(sc->ioc, Exchange(sc->conn, im.host, im.port, request, im.options, streaming, limit, sink),
                   [&](std::exception_ptr e, ExchangeResult r) {
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& ex) {
                         r.status = InternalError(fmt::format("{}: {}", im.address, ex.what()));
                       }
                     }
                     result = std::move(r);
                   });
    sc->ioc.run();
    sc->ioc.restart();
    if (result.status.ok()) {
      if (result.reusable) {
        std::lock_guard lock(im.mu);
        if (im.idle.size() < im.options.max_idle_connections) im.idle.push_back(std::move(sc));
      }
      return resp;
    }
    // A kept-alive connection the server closed meanwhile: retry once, fresh.
    if (result.retryable && attempt == 0 && !got_data) continue;
    return result.status;
  }
}

}  // namespace

StatusOr<ClientResponse> Client::Send(const ClientRequest& request) {
  return RunSync(*impl_, request, false, nullptr);
}

StatusOr<ClientResponse> Client::SendStreaming(const ClientRequest& request,
                                               const std::function<bool(std::string_view)>& on_data) {
  return RunSync(*impl_, request, true, &on_data);
}

StatusOr<ClientResponse> Client::Get(std::string target) {
  return Send({Method::kGet, std::move(target), {}, {}, {}});
}
StatusOr<ClientResponse> Client::Put(std::string target, std::string body) {
  return Send({Method::kPut, std::move(target), std::move(body), "application/octet-stream", {}});
}
StatusOr<ClientResponse> Client::Post(std::string target, std::string body,
                                      std::string content_type) {
  return Send({Method::kPost, std::move(target), std::move(body), std::move(content_type), {}});
}
StatusOr<ClientResponse> Client::Delete(std::string target) {
  return Send({Method::kDelete, std::move(target), {}, {}, {}});
}

// ------------------------------------------------------------ StreamClient

namespace {

struct StreamState;

// Pool key: connections are reused per host:port and per io_context, since
// a connection may only be used on the io thread it was made for.
std::string PoolKey(const std::string& address, const asio::any_io_executor& ex) {
  return fmt::format("{}@{}", address, static_cast<const void*>(&ex.context()));
}

}  // namespace

struct StreamClient::Impl {
  ClientOptions options;
  std::vector<std::unique_ptr<asio::io_context>> iocs;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::vector<std::thread> threads;
  std::atomic<size_t> next{0};
  std::atomic<bool> stopped{false};
  std::mutex mu;
  std::unordered_map<std::string, std::vector<std::shared_ptr<Conn>>> idle;  // guarded by mu
  std::unordered_map<StreamState*, std::weak_ptr<StreamState>> in_flight;    // guarded by mu

  // A pooled connection for `address` on `io` (or on one of our threads),
  // else a new one; `*key` is where it returns.
  std::shared_ptr<Conn> TakeConn(const std::string& address, const internal::IoAffinity* io,
                                 std::string* key) {
    asio::any_io_executor ex =
        io ? io->executor : asio::any_io_executor(iocs[next++ % iocs.size()]->get_executor());
    *key = PoolKey(address, ex);
    {
      std::lock_guard lock(mu);
      auto it = idle.find(*key);
      if (it != idle.end() && !it->second.empty()) {
        auto c = std::move(it->second.back());
        it->second.pop_back();
        return c;
      }
    }
    return std::make_shared<Conn>(std::move(ex), io ? io->owner : nullptr);
  }
  void ReturnConn(const std::string& key, std::shared_ptr<Conn> c) {
    std::lock_guard lock(mu);
    if (stopped) return;
    auto& v = idle[key];
    if (v.size() < options.max_idle_connections) v.push_back(std::move(c));
  }
};

namespace {

struct StreamState : StreamHandle, std::enable_shared_from_this<StreamState> {
  std::shared_ptr<StreamClient::Impl> client;
  std::shared_ptr<Conn> conn;  // io thread only once started (swapped on a retry)
  std::string pool_key;
  asio::any_io_executor ex;
  bool foreign = false;  // runs on a Server's io thread, not on the client's own
  std::atomic<bool> cancelled{false};
  bool finished = false;  // io thread only: the connection went back to the pool
  std::shared_ptr<Gate> gate;  // when the callbacks pause; opened by Cancel()

  void Cancel() override {
    if (cancelled.exchange(true)) return;
    // Our own threads are gone once the client stopped (it cancelled us then).
    if (!foreign && client->stopped) return;
    // Checked on the io thread: after the exchange finished, `conn` may be
    // pooled or carrying another request, and must not be closed.
    asio::post(ex, [self = shared_from_this()] {
      if (self->finished) return;
      beast::error_code ec;
      self->conn->stream.socket().close(ec);
      if (self->gate) self->gate->Open();
    });
  }
};

asio::awaitable<void> RunStream(std::shared_ptr<StreamState> st, std::string host, uint16_t port,
                                ClientRequest request, StreamCallbacks cb) {
  auto& im = *st->client;
  const std::string addr = fmt::format("{}:{}", host, port);
  bool got_head = false;
  Sink sink{[&](int status, Headers&& h) {
              got_head = true;
              return !st->cancelled && (!cb.on_head || cb.on_head(status, h));
            },
            [&](std::string_view d) { return !st->cancelled && (!cb.on_data || cb.on_data(d)); },
            cb.pause, st->gate};
  ExchangeResult r;
  r.status = CancelledError(fmt::format("request to {} cancelled", addr));
  for (int attempt = 0; !st->cancelled; ++attempt) {
    r = co_await Exchange(*st->conn, host, port, request, im.options, true,
                          std::numeric_limits<uint64_t>::max(), sink);
    if (!r.status.ok() && r.retryable && attempt == 0 && !got_head && !st->cancelled) {
      // A pooled connection the server had closed: one fresh try, same thread.
      st->conn = std::make_shared<Conn>(st->ex, st->conn->io_owner);
      continue;
    }
    break;
  }
  st->finished = true;
  if (r.status.ok() && r.reusable && !st->cancelled) im.ReturnConn(st->pool_key, st->conn);
  Status done = st->cancelled ? CancelledError(fmt::format("request to {} cancelled", addr))
                              : std::move(r.status);
  {
    std::lock_guard lock(im.mu);
    im.in_flight.erase(st.get());
  }
  if (cb.on_done) cb.on_done(std::move(done));
}

}  // namespace

StreamClient::StreamClient(ClientOptions options, int io_threads)
    : impl_(std::make_shared<Impl>()) {
  impl_->options = options;
  for (int i = 0; i < std::max(1, io_threads); ++i) {
    impl_->iocs.push_back(std::make_unique<asio::io_context>(1));
    impl_->guards.push_back(asio::make_work_guard(*impl_->iocs.back()));
  }
  for (auto& ioc : impl_->iocs) impl_->threads.emplace_back([ioc = ioc.get()] { ioc->run(); });
}

StreamClient::~StreamClient() {
  Impl& im = *impl_;
  std::vector<std::shared_ptr<StreamState>> live;
  {
    std::lock_guard lock(im.mu);
    for (auto& [p, w] : im.in_flight)
      if (auto s = w.lock()) live.push_back(std::move(s));
    im.idle.clear();
  }
  for (auto& s : live) s->Cancel();
  live.clear();
  im.stopped = true;
  im.guards.clear();
  for (auto& t : im.threads) t.join();
  std::lock_guard lock(im.mu);
  im.idle.clear();  // returned meanwhile by streams on foreign threads
}

std::shared_ptr<StreamHandle> StreamClient::Start(std::string host, uint16_t port,
                                                  ClientRequest request, StreamCallbacks callbacks,
                                                  const ResponseWriter* relay_to) {
  auto st = std::make_shared<StreamState>();
  st->client = impl_;
  std::optional<internal::IoAffinity> io;
  if (relay_to) io = internal::WriterIo(*relay_to);
  st->foreign = io.has_value();
  st->conn = impl_->TakeConn(fmt::format("{}:{}", host, port), io ? &*io : nullptr, &st->pool_key);
  st->ex = st->conn->stream.get_executor();
  if (callbacks.pause) st->gate = std::make_shared<Gate>(st->ex);
  {
    std::lock_guard lock(impl_->mu);
    impl_->in_flight[st.get()] = st;
  }
  asio::co_spawn(st->ex, RunStream(st, std::move(host), port, std::move(request), std::move(callbacks)),
                 [](std::exception_ptr e) {
                   if (!e) return;
                   try {
                     std::rethrow_exception(e);
                   } catch (const std::exception& ex) {
                     spdlog::error("http: stream client callback threw: {}", ex.what());
                   }
                 });
  return st;
}

}  // namespace crescent::http
