// One client request through the proxy: prefill step, then the decode
// instance's response relayed to the client, with the failover rules of
// proxy.h. Upstream callbacks run on the StreamClient's io threads; the
// client's disconnect and health-driven abandonment arrive from other
// threads, hence mu_.
#include <fmt/format.h>

#include "common/logging.h"
#include "proxy/prefix_hash.h"
#include "proxy/proxy_internal.h"

namespace crescent::proxy {

using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double Millis(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// True when the instance refused or reset the connection before answering:
// it is down, take it out of rotation now. A connect *timeout* is not that
// (an overloaded instance or proxy): the request moves on, the probes judge.
// The HTTP library reports both as UNAVAILABLE; only the message differs.
bool Unreachable(const Status& s, int http_status) {
  return !s.ok() && s.code() == StatusCode::kUnavailable && http_status == 0 &&
         s.message().find("timed out") == std::string::npos;
}

// A prefill response is read and dropped; keep only this much for logs.
constexpr size_t kMaxPrefillBodyKept = 4096;

// Unsent bytes to a client above which the relay stops reading its decode
// instance, and below which it reads again (about a thousand SSE events).
constexpr size_t kClientHighWaterBytes = 256 * 1024;
constexpr size_t kClientLowWaterBytes = 64 * 1024;

}  // namespace

class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(std::shared_ptr<Proxy::Core> core, Endpoint endpoint, http::Request request,
           std::shared_ptr<http::ResponseWriter> writer, ParsedRequest parsed, RequestInfo prefill,
           RequestInfo decode, std::string id)
      : core_(std::move(core)),
        endpoint_(endpoint),
        request_(std::move(request)),
        writer_(std::move(writer)),
        parsed_(std::move(parsed)),
        prefill_info_(std::move(prefill)),
        decode_info_(std::move(decode)),
        id_(std::move(id)),
        start_(Clock::now()) {}

  void Run() {
    core_->metrics.in_flight->Inc();
    {
      std::lock_guard lock(core_->exchanges_mu);
      core_->exchanges[this] = weak_from_this();
    }
    writer_->OnDisconnect([weak = weak_from_this()] {
      if (auto self = weak.lock()) self->ClientGone();
    });
    StartPrefill();
  }

  // The instance failed its probes: move off it (see AbandonInstance).
  void Abandon(Role role, const std::string& address, const std::string& reason) {
    std::shared_ptr<http::StreamHandle> h;
    {
      std::lock_guard lock(mu_);
      if (!lease_ || lease_.role() != role || lease_.address() != address || !handle_) return;
      abandoned_ = reason;
      h = handle_;
    }
    h->Cancel();
  }

  // The prefill attempt in progress started before `deadline`: give up on it.
  void ExpirePrefill(Clock::time_point started_before) {
    std::shared_ptr<http::StreamHandle> h;
    {
      std::lock_guard lock(mu_);
      if (!in_prefill_ || !handle_ || prefill_started_ >= started_before) return;
      abandoned_ = fmt::format("prefill on {} unanswered after {} ms", lease_.address(),
                               core_->options.prefill_timeout.count());
      h = handle_;
    }
    h->Cancel();
  }

 private:
  enum class Mode { kBuffer, kStream, kError };

  http::ClientRequest Upstream(std::string body) const {
    http::ClientRequest r;
    r.method = http::Method::kPost;
    r.target = request_.target;
    r.body = std::move(body);
    r.content_type = "application/json";
    r.headers.emplace_back("X-Request-Id", id_);
    if (auto auth = request_.Header("authorization")) r.headers.emplace_back("Authorization", *auth);
    return r;
  }

  void ClientGone() {
    std::shared_ptr<http::StreamHandle> h;
    {
      std::lock_guard lock(mu_);
      if (gone_ || finished_) return;
      gone_ = true;
      h = handle_;
    }
    core_->metrics.client_disconnects->Inc();
    if (h) h->Cancel();
  }

  // ---------------------------------------------------------------- prefill

  void StartPrefill() {
    if (prefill_tries_ >= core_->options.prefill_attempts) return SkipPrefill("attempts exhausted");
    auto lease = core_->router.Pick(Role::kPrefill, prefill_info_, tried_prefill_);
    if (!lease.ok()) return SkipPrefill("no prefill instance available");
    prefill_tries_++;
    tried_prefill_.push_back(lease->instance_id());
    prefill_log_ += (prefill_log_.empty() ? "" : ",") + lease->address();
    std::string host = lease->host();
    uint16_t port = lease->port();
    uint64_t attempt = 0;
    {
      std::lock_guard lock(mu_);
      if (!gone_) {
        attempt = ++attempt_;
        lease_ = std::move(*lease);
        in_prefill_ = true;
        prefill_started_ = Clock::now();
        prefill_status_ = 0;
        prefill_body_.clear();
      }
    }
    if (*lease) return Finish(499, "client disconnected");  // not handed over: gone
    auto self = shared_from_this();
    auto t0 = Clock::now();
    http::StreamCallbacks cb;
    cb.on_head = [self, attempt](int status, const http::Headers&) {
      std::lock_guard lock(self->mu_);
      if (attempt != self->attempt_) return false;
      self->prefill_status_ = status;
      return true;
    };
    cb.on_data = [self, attempt](std::string_view d) {
      std::lock_guard lock(self->mu_);
      if (attempt != self->attempt_) return false;
      if (self->prefill_body_.size() < kMaxPrefillBodyKept) self->prefill_body_.append(d);
      return true;
    };
    cb.on_done = [self, attempt, t0](Status s) { self->OnPrefillDone(attempt, std::move(s), t0); };
    Launch(attempt, host, port, Upstream(parsed_.prefill_body), std::move(cb));
  }

  void OnPrefillDone(uint64_t attempt, Status s, Clock::time_point t0) {
    Lease lease;
    int status;
    std::string body;
    bool gone;
    {
      std::lock_guard lock(mu_);
      if (attempt != attempt_) return;
      handle_.reset();
      lease = std::move(lease_);
      in_prefill_ = false;
      gone = gone_;
      if (!abandoned_.empty()) s = DeadlineExceededError(std::exchange(abandoned_, {}));
      status = prefill_status_;
      body = std::move(prefill_body_);
    }
    if (gone) return Finish(499, "client disconnected");
    if (s.ok() && status >= 200 && status < 300) {
      core_->metrics.prefill_seconds->Observe(Seconds(Clock::now() - t0));
      lease.Release();
      return StartDecode();
    }
    if (s.ok() && status < 500) {
      // The request itself is wrong; the decode instance answers it as a
      // vanilla instance would (same error, same format).
      core_->router.RecordError(Role::kPrefill, lease.address(), id_,
                                fmt::format("HTTP {}: {}", status, body.substr(0, 300)));
      lease.Release();
      return StartDecode();
    }
    Status err = s.ok() ? InternalError(fmt::format("HTTP {}: {}", status, body.substr(0, 300))) : s;
    bool unreachable = Unreachable(s, status);
    core_->metrics.upstream_failures[0]->Inc();
    core_->router.ReportFailure(lease, id_, err, unreachable);
    spdlog::warn("request {}: prefill on {} failed: {}", id_, lease.address(), err.ToString());
    lease.Release();
    core_->metrics.retries[0]->Inc();
    StartPrefill();
  }

  void SkipPrefill(std::string_view why) {
    core_->metrics.prefill_skipped->Inc();
    prefill_log_ += fmt::format("{}skipped ({})", prefill_log_.empty() ? "" : ",", why);
    StartDecode();
  }

  // ----------------------------------------------------------------- decode

  void StartDecode() {
    std::string last_error;
    bool gone;
    {
      std::lock_guard lock(mu_);
      gone = gone_;
      last_error = last_decode_error_;
    }
    if (gone) return Finish(499, "client disconnected");
    if (decode_tries_ >= core_->options.decode_attempts) {
      return Fail(last_decode_status_ ? last_decode_status_ : 502,
                  fmt::format("every decode attempt failed; last: {}", last_error));
    }
    auto lease = core_->router.Pick(Role::kDecode, decode_info_, tried_decode_);
    if (!lease.ok()) {
      if (decode_tries_ == 0) return Fail(503, lease.status().message());
      return Fail(last_decode_status_ ? last_decode_status_ : 502,
                  fmt::format("decode failed ({}) and no other decode instance can take the "
                              "request: {}",
                              last_error, lease.status().message()));
    }
    if (decode_tries_ > 0) core_->metrics.retries[1]->Inc();
    decode_tries_++;
    tried_decode_.push_back(lease->instance_id());
    decode_log_ += (decode_log_.empty() ? "" : ",") + lease->address();
    std::string host = lease->host();
    uint16_t port = lease->port();
    uint64_t attempt = 0;
    {
      std::lock_guard lock(mu_);
      if (!gone_) {
        attempt = ++attempt_;
        lease_ = std::move(*lease);
        mode_ = Mode::kBuffer;
        up_status_ = 0;
        buffered_.clear();
      }
    }
    if (*lease) return Finish(499, "client disconnected");  // not handed over: gone
    auto self = shared_from_this();
    http::StreamCallbacks cb;
    cb.on_head = [self, attempt](int status, const http::Headers& headers) {
      return self->OnDecodeHead(attempt, status, headers);
    };
    cb.on_data = [self, attempt](std::string_view d) { return self->OnDecodeData(attempt, d); };
    cb.on_done = [self, attempt](Status s) { self->OnDecodeDone(attempt, std::move(s)); };
    // Back-pressure: a client that does not keep up holds the decode
    // instance's stream back (through TCP) instead of filling our memory.
    cb.pause = [w = writer_](std::function<void()> resume) {
      if (w->buffered_bytes() <= kClientHighWaterBytes) return false;
      w->OnWritable(kClientLowWaterBytes, std::move(resume));
      return true;
    };
    Launch(attempt, host, port, Upstream(request_.body), std::move(cb));
  }

  bool OnDecodeHead(uint64_t attempt, int status, const http::Headers& headers) {
    std::lock_guard lock(mu_);
    if (attempt != attempt_ || gone_) return false;
    up_status_ = status;
    content_type_ = "application/json";
    for (const auto& [k, v] : headers)
      if (k == "content-type") content_type_ = v;
    if (status >= 500) mode_ = Mode::kError;  // another instance may do better
    else if (content_type_.starts_with("text/event-stream")) mode_ = Mode::kStream;
    else mode_ = Mode::kBuffer;  // whole JSON: sent with its length, as vanilla
    return true;
  }

  bool OnDecodeData(uint64_t attempt, std::string_view data) {
    bool begin = false;
    {
      std::lock_guard lock(mu_);
      if (attempt != attempt_ || gone_) return false;
      if (mode_ != Mode::kStream) {
        buffered_.append(data);
        return true;
      }
      if (!began_) begin = began_ = true;
    }
    // Bytes of one attempt arrive in order on one thread: no lock needed to write.
    if (begin) {
      writer_->BeginStream(up_status_, content_type_);
      FirstByte();
    }
    if (writer_->Write(std::string(data))) return true;
    std::lock_guard lock(mu_);
    gone_ = true;  // the client left: stop reading, do not blame the instance
    return false;
  }

  void OnDecodeDone(uint64_t attempt, Status s) {
    Lease lease;
    Mode mode;
    bool began, gone;
    int status;
    {
      std::lock_guard lock(mu_);
      if (attempt != attempt_) return;
      handle_.reset();
      lease = std::move(lease_);
      gone = gone_;
      if (!abandoned_.empty()) s = UnavailableError(std::exchange(abandoned_, {}));
      mode = mode_;
      began = began_;
      status = up_status_;
    }
    if (gone) return Finish(499, "client disconnected");
    if (s.ok() && mode != Mode::kError) {
      lease.Release();
      if (mode == Mode::kStream) {
        if (!began) {
          writer_->BeginStream(status, content_type_);
          FirstByte();
        }
        writer_->End();
      } else {
        http::Response r;
        r.status = status;
        r.content_type = content_type_;
        r.body = std::move(buffered_);
        writer_->Send(std::move(r));
        FirstByte();
      }
      return Finish(status, "");
    }
    Status err = s.ok() ? InternalError(fmt::format("HTTP {}: {}", status, buffered_.substr(0, 300)))
                        : s;
    bool unreachable = Unreachable(s, status);
    core_->metrics.upstream_failures[1]->Inc();
    core_->router.ReportFailure(lease, id_, err, unreachable);
    spdlog::warn("request {}: decode on {} failed{}: {}", id_, lease.address(),
                 began ? " mid-stream" : "", err.ToString());
    std::string where = lease.address();
    lease.Release();
    if (began) {
      core_->metrics.streams_broken->Inc();
      writer_->Write(StreamErrorEvents(
          502, fmt::format("decode instance {} failed mid-stream: {}", where, err.message())));
      writer_->End();
      return Finish(502, "stream broken: " + err.message());
    }
    {
      std::lock_guard lock(mu_);
      last_decode_error_ = fmt::format("{}: {}", where, err.message());
    }
    if (s.ok()) {
      // A 5xx answer: relay it as is if no other instance can do better.
      last_decode_status_ = status;
      last_decode_body_ = std::move(buffered_);
      last_decode_type_ = content_type_;
    } else {
      last_decode_status_ = err.code() == StatusCode::kDeadlineExceeded ? 504 : 502;
      last_decode_body_.clear();
    }
    StartDecode();
  }

  // --------------------------------------------------------------- helpers

  void Launch(uint64_t attempt, const std::string& host, uint16_t port, http::ClientRequest req,
              http::StreamCallbacks cb) {
    std::shared_ptr<http::StreamHandle> h;
    {
      std::shared_lock stop_lock(core_->launch_mu);
      // On the client connection's io thread: each relayed chunk goes from
      // the upstream socket to the client's without a thread hand-off.
      if (!core_->stopping)
        h = core_->upstream->Start(host, port, std::move(req), std::move(cb), writer_.get());
    }
    if (!h) {
      {
        std::lock_guard lock(mu_);
        lease_.Release();
      }
      writer_->Send(JsonError(503, "the proxy is shutting down"));
      return Finish(503, "the proxy is shutting down");
    }
    {
      std::lock_guard lock(mu_);
      // on_done may already have run (then the handle is not kept).
      if (attempt != attempt_ || !lease_) return;
      if (!gone_ && abandoned_.empty()) {
        handle_ = std::move(h);
        return;
      }
    }
    // The client left (or the instance was abandoned) before the handle was
    // stored, so nobody could cancel it then.
    h->Cancel();
  }

  void FirstByte() {
    core_->metrics.first_byte_seconds->Observe(Seconds(Clock::now() - start_));
  }

  void Fail(int status, std::string message) {
    if (status >= 500 && !last_decode_body_.empty() && status == last_decode_status_) {
      http::Response r;
      r.status = status;
      r.content_type = last_decode_type_;
      r.body = last_decode_body_;
      writer_->Send(std::move(r));
    } else {
      writer_->Send(JsonError(status, message));
    }
    core_->router.RecordError(Role::kDecode, "", id_, message);
    Finish(status, message);
  }

  void Finish(int status, std::string_view error) {
    {
      std::lock_guard lock(mu_);
      if (finished_) return;
      finished_ = true;
    }
    auto& m = core_->metrics;
    int e = endpoint_ == Endpoint::kCompletions ? 0 : 1;
    if (status >= 200 && status < 400) m.requests[e][ProxyMetrics::kOk]->Inc();
    else if (status >= 400 && status < 500 && status != 499) m.requests[e][ProxyMetrics::kClientError]->Inc();
    else m.requests[e][ProxyMetrics::kFailed]->Inc();
    m.in_flight->Dec();
    auto elapsed = Clock::now() - start_;
    m.request_seconds->Observe(Seconds(elapsed));
    {
      std::lock_guard lock(core_->exchanges_mu);
      core_->exchanges.erase(this);
    }
    if (error.empty()) {
      spdlog::info("request {} {} prefill={} decode={} status={} stream={} ms={:.1f}", id_,
                   EndpointPath(endpoint_), prefill_log_, decode_log_, status, parsed_.stream,
                   Millis(elapsed));
    } else {
      spdlog::warn("request {} {} prefill={} decode={} status={} stream={} ms={:.1f} error: {}",
                   id_, EndpointPath(endpoint_), prefill_log_, decode_log_.empty() ? "-" : decode_log_,
                   status, parsed_.stream, Millis(elapsed), error);
    }
  }

  // Constant after construction.
  const std::shared_ptr<Proxy::Core> core_;
  const Endpoint endpoint_;
  const http::Request request_;
  const std::shared_ptr<http::ResponseWriter> writer_;
  const ParsedRequest parsed_;
  const RequestInfo prefill_info_;
  const RequestInfo decode_info_;
  const std::string id_;
  const Clock::time_point start_;

  // Owned by the step in progress (one at a time, handed over in order).
  int prefill_tries_ = 0;
  int decode_tries_ = 0;
  std::vector<uint64_t> tried_prefill_;
  std::vector<uint64_t> tried_decode_;
  std::string prefill_log_;  // instances tried, for the request log
  std::string decode_log_;
  std::string content_type_;
  std::string buffered_;  // a non-streamed (or 5xx) decode response
  int last_decode_status_ = 0;
  std::string last_decode_body_;
  std::string last_decode_type_;

  std::mutex mu_;
  // Guarded by mu_.
  uint64_t attempt_ = 0;  // callbacks of older attempts are ignored
  Lease lease_;           // the instance of the attempt in progress
  std::shared_ptr<http::StreamHandle> handle_;
  std::string abandoned_;  // why the attempt in progress was cancelled by the proxy
  bool gone_ = false;
  bool finished_ = false;
  bool began_ = false;  // bytes went to the client
  bool in_prefill_ = false;
  Clock::time_point prefill_started_;
  Mode mode_ = Mode::kBuffer;
  int up_status_ = 0;
  int prefill_status_ = 0;
  std::string prefill_body_;
  std::string last_decode_error_;
};

void HandleInference(std::shared_ptr<Proxy::Core> core, Endpoint endpoint, http::Request request,
                     std::shared_ptr<http::ResponseWriter> writer) {
  auto parsed = ParseRequest(endpoint, request.body);
  int e = endpoint == Endpoint::kCompletions ? 0 : 1;
  if (!parsed.ok()) {
    core->metrics.requests[e][ProxyMetrics::kClientError]->Inc();
    writer->Send(JsonError(400, parsed.status().message()));
    return;
  }
  const ProxyOptions& o = core->options;
  std::vector<int32_t> tokenized;
  const std::vector<int32_t>* tokens = &parsed->prompt_tokens;
  bool hashes = PolicyNeedsPrefixHashes(o.scheduling);
  if (hashes && tokens->empty() && o.tokenize && !parsed->prompt_text.empty()) {
    tokenized = o.tokenize(parsed->prompt_text);
    tokens = &tokenized;
  }
  int64_t prompt_tokens = tokens->empty() ? static_cast<int64_t>(parsed->prompt_text.size() / 4 + 1)
                                          : static_cast<int64_t>(tokens->size());
  RequestInfo prefill;
  prefill.tokens = prompt_tokens;
  if (hashes) {
    prefill.prefix_hashes = tokens->empty()
                                ? ChainedByteBlockHashes(parsed->prompt_text, 4 * o.block_tokens)
                                : ChainedBlockHashes(*tokens, o.block_tokens);
  }
  RequestInfo decode = prefill;
  decode.tokens += parsed->max_tokens > 0 ? parsed->max_tokens : o.assumed_max_tokens;
  std::string id = request.Header("x-request-id").value_or(core->NewRequestId());
  auto ex = std::make_shared<Exchange>(core, endpoint, std::move(request), std::move(writer),
                                       std::move(*parsed), std::move(prefill), std::move(decode),
                                       std::move(id));
  ex->Run();
}

void ExpireSlowPrefills(Proxy::Core& core) {
  std::vector<std::shared_ptr<Exchange>> live;
  {
    std::lock_guard lock(core.exchanges_mu);
    for (auto& [p, w] : core.exchanges)
      if (auto s = w.lock()) live.push_back(std::move(s));
  }
  auto cutoff = Clock::now() - core.options.prefill_timeout;
  for (auto& ex : live) ex->ExpirePrefill(cutoff);
}

void AbandonInstance(Proxy::Core& core, Role role, const std::string& address,
                     const std::string& reason) {
  std::vector<std::shared_ptr<Exchange>> live;
  {
    std::lock_guard lock(core.exchanges_mu);
    for (auto& [p, w] : core.exchanges)
      if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& ex : live) ex->Abandon(role, address, reason);
}

}  // namespace crescent::proxy
