// HTTP/1.1 for every Crescent server and client (Boost.Beast/Asio inside).
//
// Server: N io threads, routing by method + path, keep-alive, a request
// body limit, and two kinds of handlers:
//   - simple:  Response(const Request&), runs on an io thread, must not block;
//   - async:   void(Request, shared_ptr<ResponseWriter>): reply later from any
//              thread with Send(), or stream (chunked transfer / SSE) with
//              BeginStream() + Write() ... End(). OnDisconnect() tells the
//              handler that the client went away so it can abort its work.
// Client: a pooled keep-alive client for request/response with timeouts
// (http::Client), and an async streaming client that hands a response body
// to callbacks chunk by chunk as it arrives (http::StreamClient), made to
// relay an upstream's stream through a ResponseWriter on the client
// connection's own io thread, without a thread per stream.
//
// Errors name the address: "cannot reach 127.0.0.1:8080: connection refused".
// Beast and Asio stay out of this header (pimpl); see http_server.cc,
// http_client.cc.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"

namespace crescent::http {

enum class Method { kGet, kHead, kPost, kPut, kDelete, kPatch, kOptions, kOther };
std::string_view MethodName(Method m);  // "GET", ...

// Header names are compared case-insensitively; servers store them lowercased.
using Headers = std::vector<std::pair<std::string, std::string>>;

// Percent-encodes a query component (RFC 3986 unreserved chars pass through).
std::string UrlEncode(std::string_view s);
// Decodes %XX and '+' (as space); malformed escapes are kept literally.
std::string UrlDecode(std::string_view s);

struct Request {
  Method method = Method::kGet;
  std::string method_name;  // as sent, e.g. "GET"
  std::string target;       // as sent: "/metadata?key=a%2Fb"
  std::string path;         // target up to '?', not decoded: "/metadata"
  std::vector<std::pair<std::string, std::string>> query;  // decoded, in order
  Headers headers;                                          // names lowercased
  std::string body;
  std::string remote;  // peer "ip:port", for logs

  // First value of query parameter / header `name`, if present.
  std::optional<std::string> Query(std::string_view name) const;
  std::optional<std::string> Header(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  Headers headers;  // extra headers
  std::string body;

  static Response Text(int status, std::string body);
  static Response Json(int status, std::string json_text);
};

// The reply channel of one async request. Thread-safe: any method may be
// called from any thread. Calls after the response completed are ignored.
// Dropping the last reference without replying sends a 500 (or ends a
// started stream), so a request can never hang the connection.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;

  // The whole response, once.
  virtual void Send(Response response) = 0;

  // Starts a chunked response (for SSE use content_type
  // "text/event-stream"). Then Write() any number of times and End().
  virtual void BeginStream(int status, std::string content_type, Headers headers = {}) = 0;
  // Queues `data` as one chunk; never blocks. False once the client is gone
  // or the response ended: stop producing.
  virtual bool Write(std::string data) = 0;
  // Server-sent event: "data: <data>\n\n" (multi-line data split per line).
  bool WriteEvent(std::string_view data);
  // Terminates the stream (last chunk); the connection stays open for the
  // next request when keep-alive.
  virtual void End() = 0;

  // True once the client disconnected (or the connection failed).
  virtual bool client_gone() const = 0;
  // `callback` runs once, on an io thread (must not block), when the client
  // disconnects before the response completed; at once if already gone.
  virtual void OnDisconnect(std::function<void()> callback) = 0;
  // Bytes queued but not yet written to the socket (back-pressure signal).
  virtual size_t buffered_bytes() const = 0;
  // `callback` runs once, on an io thread (must not block), when
  // buffered_bytes() has fallen to `low_water` or below; at once (in the
  // calling thread) if it already has, and also when the client leaves or
  // the response completes: a producer waits for a slow client instead of
  // queueing without bound (see StreamCallbacks::pause).
  virtual void OnWritable(size_t low_water, std::function<void()> callback) = 0;
};

using SimpleHandler = std::function<Response(const Request&)>;
using AsyncHandler = std::function<void(Request, std::shared_ptr<ResponseWriter>)>;

struct ServerOptions {
  std::string host = "127.0.0.1";  // "0.0.0.0" for every interface
  uint16_t port = 0;               // 0: an ephemeral port (see Server::port())
  int io_threads = 1;
  size_t max_body_bytes = 64u << 20;  // larger requests get 413
  // A keep-alive connection idle this long (or a request head this slow) is closed.
  std::chrono::milliseconds idle_timeout{60000};
  // A client that does not take written bytes for this long is dropped.
  std::chrono::milliseconds write_timeout{30000};
  std::string server_name = "crescent";
};

// Routes are exact paths ("/metadata") or prefixes ending in "/*"
// ("/v1/*" matches "/v1/models"); the longest match wins. A path served
// by other methods only gets 405, an unknown path 404. A handler that
// throws gets a 500 with the exception's message.
//
// Thread safety: add routes before Start(); Start/Stop from one thread. A
// Server starts once (make a new one to listen again).
class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // Stop()s
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void Handle(Method method, std::string path, SimpleHandler handler);
  void HandleAsync(Method method, std::string path, AsyncHandler handler);

  // Binds and starts the io threads. "cannot listen on 0.0.0.0:8080:
  // address already in use" etc.
  Status Start();
  // Stops accepting, closes every connection, joins the io threads.
  // Pending ResponseWriters see client_gone().
  void Stop();

  uint16_t port() const;         // the bound port, after Start()
  std::string address() const;   // "127.0.0.1:PORT"
  size_t open_connections() const;

  struct Impl;  // in the .cc; public only so that helpers there can name it

 private:
  std::shared_ptr<Impl> impl_;
};

// ---------------------------------------------------------------- client

struct ClientRequest {
  Method method = Method::kGet;
  std::string target = "/";  // path + query, already encoded
  std::string body;
  std::string content_type;  // sent when non-empty
  Headers headers;
};

struct ClientResponse {
  int status = 0;
  Headers headers;  // names lowercased
  std::string body;
  std::optional<std::string> Header(std::string_view name) const;
};

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{3000};
  // Whole request/response for Client; for StreamClient the longest wait
  // for the response head and then between two body chunks.
  std::chrono::milliseconds timeout{30000};
  size_t max_response_bytes = 1u << 30;  // Client only
  size_t max_idle_connections = 16;      // kept open per client for reuse
};

// Blocking request/response over pooled keep-alive connections to one
// host:port. Thread-safe: concurrent calls use separate connections.
// Errors: UNAVAILABLE "cannot reach H:P: <why>" when the connection
// cannot be made (or drops before a response), DEADLINE_EXCEEDED naming
// the address and the request on timeout. Any HTTP status is a response,
// not an error.
class Client {
 public:
  Client(std::string host, uint16_t port, ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  StatusOr<ClientResponse> Send(const ClientRequest& request);
  StatusOr<ClientResponse> Get(std::string target);
  StatusOr<ClientResponse> Put(std::string target, std::string body);
  StatusOr<ClientResponse> Post(std::string target, std::string body,
                                std::string content_type = "application/json");
  StatusOr<ClientResponse> Delete(std::string target);

  // Blocking streaming (e.g. a benchmark reading SSE in its own thread):
  // hands the body to `on_data` piece by piece as it arrives, in the
  // calling thread; returns status and headers (body left empty). Here
  // options.timeout is the longest wait for the head and between two
  // pieces. `on_data` returning false aborts with CANCELLED.
  StatusOr<ClientResponse> SendStreaming(const ClientRequest& request,
                                         const std::function<bool(std::string_view)>& on_data);

  const std::string& address() const;  // "host:port"

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Callbacks of one streamed exchange. They run on the exchange's io thread
// (see StreamClient) and must not block (hand data to a ResponseWriter, a queue...).
struct StreamCallbacks {
  // The status line and headers arrived. Return false to abort.
  std::function<bool(int status, const Headers& headers)> on_head = nullptr;
  // A piece of the (de-chunked) body, as soon as it arrived. False aborts.
  std::function<bool(std::string_view data)> on_data = nullptr;
  // Exactly once, last: OK when the whole body arrived; CANCELLED after
  // Cancel() or a callback returned false; otherwise the error.
  std::function<void(Status status)> on_done = nullptr;
  // Optional flow control, asked after each on_data: true stops reading
  // the response (the upstream is then held back by TCP) until `resume`
  // runs (once, from any thread; Cancel() resumes too). A relay pauses
  // while its client has too much unsent:
  //   [w](auto resume) { if (w->buffered_bytes() < kHigh) return false;
  //                      w->OnWritable(kLow, std::move(resume)); return true; }
  // No read timeout runs while paused.
  std::function<bool(std::function<void()> resume)> pause = nullptr;
};

// Handle of one streamed exchange; Cancel() from any thread closes it
// (on_done then gets CANCELLED unless it already ran). Cancel() after the
// exchange completed does nothing (its connection, back in the pool, is
// left alone).
class StreamHandle {
 public:
  virtual ~StreamHandle() = default;
  virtual void Cancel() = 0;
};

// Async client for streamed responses (a proxy's upstream side). Owns its
// io threads; connections are pooled per host:port (and io thread).
// Thread-safe.
//
// Relaying: Start(..., relay_to) with the ResponseWriter that the stream
// will be written to runs the exchange, and its callbacks, on the io thread
// of that writer's client connection (an http::Server's thread), so that a
// relayed chunk goes from the upstream socket to the client socket on one
// thread, without a hand-off between threads. Such exchanges keep running
// on the server's thread: cancel them before stopping that server.
class StreamClient {
 public:
  explicit StreamClient(ClientOptions options = {}, int io_threads = 1);
  // Cancels what is in flight and joins the threads. Exchanges running on a
  // server's io thread (relay_to) end there after this returns (on_done
  // gets CANCELLED).
  ~StreamClient();
  StreamClient(const StreamClient&) = delete;
  StreamClient& operator=(const StreamClient&) = delete;

  // `relay_to`: see above; nullptr (or a writer not made by http::Server)
  // runs the exchange on one of this client's io threads.
  std::shared_ptr<StreamHandle> Start(std::string host, uint16_t port, ClientRequest request,
                                      StreamCallbacks callbacks,
                                      const ResponseWriter* relay_to = nullptr);

  struct Impl;  // in the .cc; public only so that helpers there can name it

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace crescent::http
