// http::Server: one io_context per io thread; each connection lives on one
// of them, so a connection's io-side state needs no lock. Writers from
// other threads append framed bytes to the connection's outbox under a
// mutex and post one flush.
#include <boost/asio.hpp>
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

namespace {

// While a response is pending we keep reading to notice a disconnect;
// pipelined bytes beyond this are left in the kernel until we are done.
constexpr size_t kMaxPeekBuffered = 64 * 1024;
// Queued pieces smaller than this are joined before a write (see Flush).
constexpr size_t kJoinBelowBytes = 4096;

struct Route {
  Method method;
  SimpleHandler simple;
  AsyncHandler async;
};

}  // namespace

class Session;

struct Server::Impl {
  ServerOptions options;
  std::map<std::string, std::vector<Route>, std::less<>> exact;
  std::map<std::string, std::vector<Route>, std::less<>> prefix;  // key without '*'

  std::vector<std::unique_ptr<asio::io_context>> iocs;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::vector<std::thread> threads;
  uint16_t port = 0;
  size_t next_ioc = 0;  // acceptor thread only
  bool started = false;
  std::atomic<bool> stopping{false};  // set by Stop(): new connections close at once

  std::mutex sessions_mu;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions;  // guarded by sessions_mu

  const std::vector<Route>* FindRoutes(std::string_view path) const;
  void Accept(std::shared_ptr<Impl> self);
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<Server::Impl> server, tcp::socket socket)
      : server_(std::move(server)), socket_(std::move(socket)), timer_(socket_.get_executor()) {
    beast::error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
    socket_.set_option(tcp::no_delay(true), ec);
  }

  void Start() { DoRead(); }
  tcp::socket::executor_type executor() { return socket_.get_executor(); }
  const std::shared_ptr<Server::Impl>& server() const { return server_; }

  // ---- called by WriterImpl, any thread --------------------------------
  void QueueResponse(uint64_t seq, Response r);
  void QueueHead(uint64_t seq, int status, std::string content_type, Headers headers);
  bool QueueChunk(uint64_t seq, std::string data);
  void QueueEnd(uint64_t seq);
  void Abandon(uint64_t seq);  // writer dropped
  bool Gone(uint64_t seq) {
    std::lock_guard lock(mu_);
    return gone_ || seq != seq_ || state_ == State::kDone;
  }
  void SetOnDisconnect(uint64_t seq, std::function<void()> cb);
  size_t Buffered() {
    std::lock_guard lock(mu_);
    return buffered_;
  }
  void SetOnWritable(uint64_t seq, size_t low_water, std::function<void()> cb);
  // Io thread of this session (posted by Server::Stop).
  void Close();

 private:
  enum class State { kNone, kStreaming, kDone };

  void DoRead();
  void OnHeader(beast::error_code ec);
  void OnRead(beast::error_code ec);
  void Dispatch();
  void StartPeek();
  void OnPeek(beast::error_code ec, size_t n);
  // True when the caller must Kick() (after releasing mu_).
  bool ScheduleFlushLocked();
  void Kick();
  void Flush();
  void OnWritten(beast::error_code ec, size_t n, bool final);
  void FinishResponse();
  // Runs the OnWritable callbacks whose low water mark is met (all when
  // `all`); io thread, without mu_ held.
  void RunWritable(bool all);
  // One lazily re-armed timer per connection: setting or clearing a
  // deadline is a store, not a timer syscall per request. A deadline
  // shorter than the one armed fires late, by at most the armed one.
  void SetDeadline(std::chrono::milliseconds d);
  void ClearDeadline() { deadline_ = Clock::time_point::max(); }
  void ArmTimer();
  void OnTimer(beast::error_code ec);
  std::string HeadLocked(int status, std::string_view content_type, const Headers& headers,
                         std::optional<size_t> content_length);

  // Constant after construction.
  const std::shared_ptr<Server::Impl> server_;
  std::string remote_;

  // Io thread only.
  tcp::socket socket_;
  asio::steady_timer timer_;
  using Clock = std::chrono::steady_clock;
  Clock::time_point deadline_ = Clock::time_point::max();
  bool timer_armed_ = false;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  bool closed_ = false;
  bool writing_ = false;
  bool peek_pending_ = false;
  bool read_after_peek_ = false;
  std::vector<std::string> in_flight_;  // buffers of the current async_write

  // Guarded by mu_ (shared with writer threads).
  std::mutex mu_;
  uint64_t seq_ = 0;             // current request number
  State state_ = State::kNone;   // of request seq_
  bool final_queued_ = false;    // the response's last bytes are in outbox_
  bool keep_alive_ = true;
  bool chunked_ = true;
  unsigned version_ = 11;
  bool gone_ = false;
  bool flush_posted_ = false;
  std::vector<std::string> outbox_;
  size_t buffered_ = 0;
  std::function<void()> on_disconnect_;
  std::vector<std::pair<size_t, std::function<void()>>> on_writable_;  // low water, callback
};

namespace {

class WriterImpl final : public ResponseWriter {
 public:
  WriterImpl(std::shared_ptr<Session> s, uint64_t seq) : s_(std::move(s)), seq_(seq) {}
  ~WriterImpl() override { s_->Abandon(seq_); }
  void Send(Response r) override { s_->QueueResponse(seq_, std::move(r)); }
  void BeginStream(int status, std::string content_type, Headers headers) override {
    s_->QueueHead(seq_, status, std::move(content_type), std::move(headers));
  }
  bool Write(std::string data) override { return s_->QueueChunk(seq_, std::move(data)); }
  void End() override { s_->QueueEnd(seq_); }
  bool client_gone() const override { return s_->Gone(seq_); }
  void OnDisconnect(std::function<void()> cb) override { s_->SetOnDisconnect(seq_, std::move(cb)); }
  size_t buffered_bytes() const override { return s_->Buffered(); }
  void OnWritable(size_t low_water, std::function<void()> cb) override {
    s_->SetOnWritable(seq_, low_water, std::move(cb));
  }
  internal::IoAffinity Io() const { return {s_->executor(), s_->server()}; }

 private:
  std::shared_ptr<Session> s_;
  uint64_t seq_;
};

}  // namespace

std::optional<internal::IoAffinity> internal::WriterIo(const ResponseWriter& writer) {
  if (auto* w = dynamic_cast<const WriterImpl*>(&writer)) return w->Io();
  return std::nullopt;
}

std::string Session::HeadLocked(int status, std::string_view content_type, const Headers& headers,
                                std::optional<size_t> content_length) {
  std::string reason(bhttp::obsolete_reason(static_cast<bhttp::status>(status)));
  std::string h = fmt::format("HTTP/1.{} {} {}\r\nServer: {}\r\n", version_ == 10 ? 0 : 1, status,
                              reason, server_->options.server_name);
  if (!content_type.empty()) h += fmt::format("Content-Type: {}\r\n", content_type);
  for (const auto& [k, v] : headers) h += fmt::format("{}: {}\r\n", k, v);
  if (content_length) {
    h += fmt::format("Content-Length: {}\r\n", *content_length);
  } else if (chunked_) {
    h += "Transfer-Encoding: chunked\r\n";
  }
  if (!keep_alive_) h += "Connection: close\r\n";
  else if (version_ == 10) h += "Connection: keep-alive\r\n";
  h += "\r\n";
  return h;
}

void Session::QueueResponse(uint64_t seq, Response r) {
  std::unique_lock lock(mu_);
  if (seq != seq_ || state_ != State::kNone || gone_) return;
  state_ = State::kDone;
  std::string bytes = HeadLocked(r.status, r.content_type, r.headers, r.body.size());
  if (r.body.size() < 16 * 1024) {
    bytes += r.body;
    buffered_ += bytes.size();
    outbox_.push_back(std::move(bytes));
  } else {  // avoid copying a large body
    buffered_ += bytes.size() + r.body.size();
    outbox_.push_back(std::move(bytes));
    outbox_.push_back(std::move(r.body));
  }
  final_queued_ = true;
  if (ScheduleFlushLocked()) {
    lock.unlock();
    Kick();
  }
}

void Session::QueueHead(uint64_t seq, int status, std::string content_type, Headers headers) {
  std::unique_lock lock(mu_);
  if (seq != seq_ || state_ != State::kNone || gone_) return;
  state_ = State::kStreaming;
  if (version_ == 10) {  // no chunked encoding in HTTP/1.0: the close ends the body
    chunked_ = false;
    keep_alive_ = false;
  }
  std::string bytes = HeadLocked(status, content_type, headers, std::nullopt);
  buffered_ += bytes.size();
  outbox_.push_back(std::move(bytes));
  if (ScheduleFlushLocked()) {
    lock.unlock();
    Kick();
  }
}

bool Session::QueueChunk(uint64_t seq, std::string data) {
  std::unique_lock lock(mu_);
  if (seq != seq_ || state_ != State::kStreaming || gone_) return false;
  if (data.empty()) return true;  // an empty chunk would end the body
  if (chunked_) {
    char head[24];
    size_t head_len = fmt::format_to(head, "{:x}\r\n", data.size()) - head;
    buffered_ += head_len + data.size() + 2;
    if (data.size() < kJoinBelowBytes) {
      // A small chunk (an SSE event) is framed in one buffer.
      std::string framed;
      framed.reserve(head_len + data.size() + 2);
      framed.append(head, head_len).append(data).append("\r\n", 2);
      outbox_.push_back(std::move(framed));
    } else {  // framing as separate buffers: a large chunk is not copied again
      outbox_.emplace_back(head, head_len);
      outbox_.push_back(std::move(data));
      outbox_.emplace_back("\r\n");
    }
  } else {
    buffered_ += data.size();
    outbox_.push_back(std::move(data));
  }
  if (ScheduleFlushLocked()) {
    lock.unlock();
    Kick();
  }
  return true;
}

void Session::QueueEnd(uint64_t seq) {
  std::unique_lock lock(mu_);
  if (seq != seq_ || state_ != State::kStreaming || gone_) return;
  state_ = State::kDone;
  if (chunked_) {
    outbox_.push_back("0\r\n\r\n");
    buffered_ += 5;
  }
  final_queued_ = true;
  if (ScheduleFlushLocked()) {
    lock.unlock();
    Kick();
  }
}

void Session::Abandon(uint64_t seq) {
  State state;
  {
    std::lock_guard lock(mu_);
    if (seq != seq_ || gone_) return;
    state = state_;
  }
  if (state == State::kNone) {
    QueueResponse(seq, Response::Text(500, "internal error: the handler dropped the request "
                                           "without replying\n"));
  } else if (state == State::kStreaming) {
    QueueEnd(seq);
  }
}

void Session::SetOnDisconnect(uint64_t seq, std::function<void()> cb) {
  {
    std::lock_guard lock(mu_);
    if (seq != seq_) return;  // completed: the client did not leave early
    if (!gone_) {
      on_disconnect_ = std::move(cb);
      return;
    }
  }
  // Already gone: run it on the io thread, as promised.
  asio::post(socket_.get_executor(), std::move(cb));
}

void Session::SetOnWritable(uint64_t seq, size_t low_water, std::function<void()> cb) {
  {
    std::lock_guard lock(mu_);
    if (!gone_ && seq == seq_ && state_ != State::kDone && buffered_ > low_water) {
      on_writable_.emplace_back(low_water, std::move(cb));
      return;
    }
  }
  cb();
}

void Session::RunWritable(bool all) {
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < on_writable_.size();) {
      if (all || buffered_ <= on_writable_[i].first) {
        ready.push_back(std::move(on_writable_[i].second));
        on_writable_[i] = std::move(on_writable_.back());
        on_writable_.pop_back();
      } else {
        ++i;
      }
    }
  }
  for (auto& cb : ready) cb();
}

bool Session::ScheduleFlushLocked() {
  if (flush_posted_) return false;
  flush_posted_ = true;
  return true;
}

void Session::Kick() {
  // dispatch: inline when already on this session's io thread.
  asio::dispatch(socket_.get_executor(), [self = shared_from_this()] { self->Flush(); });
}

void Session::Flush() {
  if (writing_ || closed_) {
    if (closed_) {
      std::lock_guard lock(mu_);
      flush_posted_ = false;
    }
    return;
  }
  bool final;
  {
    std::lock_guard lock(mu_);
    flush_posted_ = false;
    if (outbox_.empty()) return;
    in_flight_.swap(outbox_);
    outbox_.clear();
    final = final_queued_;
    final_queued_ = false;
  }
  // Small pieces (chunk framing, SSE events) are joined into one buffer:
  // asio sends at most 64 buffers per sendmsg, and a burst of events would
  // otherwise take a system call per ~20 of them. Large ones go as they are.
  if (in_flight_.size() > 1) {
    std::vector<std::string> joined;
    for (auto& b : in_flight_) {
      if (b.size() >= kJoinBelowBytes) {
        joined.push_back(std::move(b));
      } else if (!joined.empty() && joined.back().size() < kJoinBelowBytes) {
        joined.back().append(b);
      } else {
        joined.push_back(std::move(b));
      }
    }
    in_flight_.swap(joined);
  }
  std::vector<asio::const_buffer> bufs;
  bufs.reserve(in_flight_.size());
  for (const auto& b : in_flight_) bufs.emplace_back(b.data(), b.size());
  writing_ = true;
  SetDeadline(server_->options.write_timeout);
  asio::async_write(socket_, bufs,
                    [self = shared_from_this(), final](beast::error_code ec, size_t n) {
                      self->OnWritten(ec, n, final);
                    });
}

void Session::OnWritten(beast::error_code ec, size_t n, bool final) {
  writing_ = false;
  in_flight_.clear();
  ClearDeadline();
  bool waiters;
  {
    std::lock_guard lock(mu_);
    buffered_ -= std::min(buffered_, n);
    waiters = !on_writable_.empty();
  }
  if (ec) return Close();
  if (waiters) RunWritable(final);
  if (final) return FinishResponse();
  Flush();
}

void Session::FinishResponse() {
  bool keep;
  {
    std::lock_guard lock(mu_);
    ++seq_;
    state_ = State::kNone;
    on_disconnect_ = nullptr;
    keep = keep_alive_ && !gone_;
  }
  if (!keep) {
    beast::error_code ec;
    socket_.shutdown(tcp::socket::shutdown_send, ec);
    return Close();
  }
  if (peek_pending_) {
    read_after_peek_ = true;
    SetDeadline(server_->options.idle_timeout);
  } else {
    DoRead();
  }
}

void Session::SetDeadline(std::chrono::milliseconds d) {
  deadline_ = Clock::now() + d;
  if (!timer_armed_) ArmTimer();
}

void Session::ArmTimer() {
  timer_armed_ = true;
  timer_.expires_at(deadline_);
  timer_.async_wait([self = shared_from_this()](beast::error_code ec) { self->OnTimer(ec); });
}

void Session::OnTimer(beast::error_code ec) {
  timer_armed_ = false;
  if (ec || closed_ || deadline_ == Clock::time_point::max()) return;
  if (Clock::now() >= deadline_) return Close();
  ArmTimer();  // the deadline moved on meanwhile
}

void Session::DoRead() {
  if (closed_) return;
  parser_.emplace();
  parser_->body_limit(server_->options.max_body_bytes);
  parser_->header_limit(64 * 1024);
  SetDeadline(server_->options.idle_timeout);
  bhttp::async_read_header(socket_, buffer_, *parser_,
                           [self = shared_from_this()](beast::error_code ec, size_t) {
                             self->OnHeader(ec);
                           });
}

void Session::OnHeader(beast::error_code ec) {
  if (ec) return OnRead(ec);
  auto& req = parser_->get();
  auto expect = req[bhttp::field::expect];
  if (!parser_->is_done() && beast::iequals(expect, "100-continue")) {
    // curl waits a second for this before sending a body > 1 KiB.
    static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    asio::async_write(socket_, asio::buffer(kContinue),
                      [self = shared_from_this()](beast::error_code ec, size_t) {
                        if (ec) return self->Close();
                        bhttp::async_read(self->socket_, self->buffer_, *self->parser_,
                                          [self](beast::error_code ec, size_t) { self->OnRead(ec); });
                      });
    return;
  }
  if (parser_->is_done()) return OnRead({});
  bhttp::async_read(socket_, buffer_, *parser_,
                    [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
}

void Session::OnRead(beast::error_code ec) {
  ClearDeadline();
  if (ec == bhttp::error::body_limit) {
    {
      std::lock_guard lock(mu_);
      keep_alive_ = false;
      version_ = 11;
    }
    QueueResponse(seq_, Response::Text(413, fmt::format("request body exceeds the limit of {} "
                                                        "bytes\n",
                                                        server_->options.max_body_bytes)));
    return;
  }
  if (ec) return Close();
  Dispatch();
}

void Session::Dispatch() {
  auto msg = parser_->release();
  Request req;
  req.method_name = std::string(msg.method_string());
  req.method = internal::ParseMethod(req.method_name);
  req.target = std::string(msg.target());
  size_t q = req.target.find('?');
  req.path = req.target.substr(0, q);
  if (q != std::string::npos) req.query = internal::ParseQuery(std::string_view(req.target).substr(q + 1));
  req.headers.reserve(std::distance(msg.begin(), msg.end()));
  for (const auto& f : msg) req.headers.emplace_back(internal::Lower(f.name_string()), std::string(f.value()));
  req.body = std::move(msg.body());
  req.remote = remote_;
  uint64_t seq;
  {
    std::lock_guard lock(mu_);
    keep_alive_ = msg.keep_alive();
    version_ = msg.version();
    chunked_ = true;
    seq = seq_;
  }

  const std::vector<Route>* routes = server_->FindRoutes(req.path);
  const Route* route = nullptr;
  if (routes) {
    for (const auto& r : *routes)
      if (r.method == req.method && (r.method != Method::kOther)) route = &r;
  }
  if (!route) {
    Response r = routes ? Response::Text(405, fmt::format("method {} is not allowed on {}\n",
                                                          req.method_name, req.path))
                        : Response::Text(404, fmt::format("no route for {}\n", req.path));
    if (routes) {
      std::string allow;
      for (const auto& rt : *routes) allow += (allow.empty() ? "" : ", ") + std::string(MethodName(rt.method));
      r.headers.emplace_back("Allow", allow);
    }
    return QueueResponse(seq, std::move(r));
  }
  if (route->simple) {
    Response r;
    try {
      r = route->simple(req);
    } catch (const std::exception& e) {
      r = Response::Text(500, fmt::format("internal error: {}\n", e.what()));
    }
    return QueueResponse(seq, std::move(r));
  }
  auto writer = std::make_shared<WriterImpl>(shared_from_this(), seq);
  StartPeek();
  try {
    route->async(std::move(req), writer);
  } catch (const std::exception& e) {
    writer->Send(Response::Text(500, fmt::format("internal error: {}\n", e.what())));
  }
}

void Session::StartPeek() {
  if (peek_pending_ || closed_ || buffer_.size() >= kMaxPeekBuffered) return;
  peek_pending_ = true;
  socket_.async_read_some(buffer_.prepare(4096),
                          [self = shared_from_this()](beast::error_code ec, size_t n) {
                            self->OnPeek(ec, n);
                          });
}

void Session::OnPeek(beast::error_code ec, size_t n) {
  peek_pending_ = false;
  if (ec) return Close();
  buffer_.commit(n);
  if (read_after_peek_) {
    read_after_peek_ = false;
    return DoRead();
  }
  StartPeek();
}

void Session::Close() {
  if (closed_) return;
  closed_ = true;
  beast::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_both, ec);
  socket_.close(ec);
  ClearDeadline();
  timer_.cancel();
  std::function<void()> cb;
  {
    std::lock_guard lock(mu_);
    gone_ = true;
    cb = std::move(on_disconnect_);  // set only while a response is incomplete
    on_disconnect_ = nullptr;
    outbox_.clear();
    buffered_ = 0;
  }
  RunWritable(true);
  {
    std::lock_guard lock(server_->sessions_mu);
    server_->sessions.erase(this);
  }
  if (cb) {
    try {
      cb();
    } catch (const std::exception& e) {
      spdlog::warn("http: OnDisconnect callback threw: {}", e.what());
    }
  }
}

// ------------------------------------------------------------------ Server

const std::vector<Route>* Server::Impl::FindRoutes(std::string_view path) const {
  if (auto it = exact.find(path); it != exact.end()) return &it->second;
  const std::vector<Route>* best = nullptr;
  size_t best_len = 0;
  for (const auto& [p, routes] : prefix) {
    if (path.starts_with(p) && p.size() >= best_len) {
      best = &routes;
      best_len = p.size();
    }
  }
  return best;
}

void Server::Impl::Accept(std::shared_ptr<Impl> self) {
  asio::io_context& ioc = *iocs[next_ioc];
  next_ioc = (next_ioc + 1) % iocs.size();
  acceptor->async_accept(ioc, [self](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !self->acceptor->is_open()) return;
    if (!ec) {
      auto s = std::make_shared<Session>(self, std::move(socket));
      {
        std::lock_guard lock(self->sessions_mu);
        self->sessions[s.get()] = s;
      }
      // Checked after the insert: Stop() either sees this session or we see
      // its flag.
      if (self->stopping) asio::post(s->executor(), [s] { s->Close(); });
      else asio::post(s->executor(), [s] { s->Start(); });
    } else {
      spdlog::warn("http: accept failed: {}", ec.message());
      if (ec == asio::error::no_descriptors) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    self->Accept(self);
  });
}

Server::Server(ServerOptions options) : impl_(std::make_shared<Impl>()) {
  impl_->options = std::move(options);
  if (impl_->options.io_threads < 1) impl_->options.io_threads = 1;
}

Server::~Server() { Stop(); }

static void AddRoute(Server::Impl& impl, Method method, std::string path, SimpleHandler simple,
                     AsyncHandler async) {
  Route r{method, std::move(simple), std::move(async)};
  if (path.size() >= 2 && path.ends_with("/*")) {
    path.pop_back();
    impl.prefix[path].push_back(std::move(r));
  } else {
    impl.exact[path].push_back(std::move(r));
  }
}

void Server::Handle(Method method, std::string path, SimpleHandler handler) {
  AddRoute(*impl_, method, std::move(path), std::move(handler), nullptr);
}

void Server::HandleAsync(Method method, std::string path, AsyncHandler handler) {
  AddRoute(*impl_, method, std::move(path), nullptr, std::move(handler));
}

Status Server::Start() {
  Impl& im = *impl_;
  if (im.started || !im.iocs.empty())
    return FailedPreconditionError("an http::Server starts once; create a new one to restart");
  std::string where = fmt::format("{}:{}", im.options.host, im.options.port);
  beast::error_code ec;
  auto addr = asio::ip::make_address(im.options.host, ec);
  if (ec)
    return InvalidArgumentError(fmt::format("cannot listen on {}: '{}' is not an IP address",
                                            where, im.options.host));
  for (int i = 0; i < im.options.io_threads; ++i) {
    im.iocs.push_back(std::make_unique<asio::io_context>(1));
    im.guards.push_back(asio::make_work_guard(*im.iocs.back()));
  }
  im.acceptor = std::make_unique<tcp::acceptor>(*im.iocs[0]);
  tcp::endpoint ep(addr, im.options.port);
  auto fail = [&](std::string_view what) {
    im.acceptor.reset();
    im.guards.clear();
    im.iocs.clear();
    std::string hint = ec == asio::error::address_in_use
                           ? "; another process holds the port (pick another with --port)"
                           : "";
    return UnavailableError(fmt::format("cannot listen on {}: {} ({}){}", where, ec.message(),
                                        what, hint));
  };
  im.acceptor->open(ep.protocol(), ec);
  if (ec) return fail("open");
  im.acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
  im.acceptor->bind(ep, ec);
  if (ec) return fail("bind");
  im.acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen");
  im.port = im.acceptor->local_endpoint().port();
  im.started = true;
  im.Accept(impl_);
  for (auto& ioc : im.iocs) {
    im.threads.emplace_back([ioc = ioc.get()] {
      for (;;) {
        try {
          ioc->run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("http: io thread caught: {}", e.what());
        }
      }
    });
  }
  return OkStatus();
}

void Server::Stop() {
  Impl& im = *impl_;
  if (!im.started) return;
  im.started = false;
  im.stopping = true;
  asio::post(*im.iocs[0], [acc = im.acceptor.get()] {
    beast::error_code ec;
    acc->close(ec);
  });
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard lock(im.sessions_mu);
    for (auto& [p, w] : im.sessions)
      if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) asio::post(s->executor(), [s] { s->Close(); });
  live.clear();
  im.guards.clear();  // threads return once their sessions are closed
  for (auto& t : im.threads) t.join();
  im.threads.clear();
  // Handlers still queued (posts from late writers) hold sessions that hold
  // impl_: drop them now so nothing outlives the io contexts.
  for (auto& ioc : im.iocs) {
    ioc->restart();
    ioc->poll();
  }
}

uint16_t Server::port() const { return impl_->port; }

std::string Server::address() const {
  return fmt::format("{}:{}", impl_->options.host, impl_->port);
}

size_t Server::open_connections() const {
  std::lock_guard lock(impl_->sessions_mu);
  return impl_->sessions.size();
}

}  // namespace crescent::http
