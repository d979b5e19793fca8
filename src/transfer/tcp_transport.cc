// Initiator side of the tcp transport. Per peer: a pool of connections,
// each driven by one worker thread with blocking I/O (no busy polling: on a
// 2-core machine every spinning cycle is taken from the data copy). A
// worker takes a few queued slices at once, sends all their headers and
// write payloads in one sendmsg, then reads the answers in order straight
// into the destination memory: the socket buffers are the only copies.
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "common/logging.h"
#include "fmt/format.h"
#include "transfer/net_util.h"
#include "transfer/tcp_server.h"
#include "transfer/transfer_format.h"
#include "transfer/transport.h"

namespace crescent::transfer {

namespace f = format;
using Clock = std::chrono::steady_clock;

namespace {

// Slices one worker sends before reading answers, and their byte budget:
// enough to hide the round trip, small enough to keep all workers busy.
constexpr size_t kMaxPipelineSlices = 16;
constexpr uint64_t kMaxPipelineBytes = 8ull << 20;

class TcpChannel final : public Channel {
 public:
  TcpChannel(const SegmentDescriptor& desc, const TransferEngineOptions& options)
      : peer_(fmt::format("segment '{}' at {}:{}", desc.name, desc.host, desc.tcp_port)),
        host_(desc.host),
        port_(desc.tcp_port),
        instance_(desc.instance),
        slice_bytes_(options.slice_size),
        buffer_bytes_(options.socket_buffer_bytes),
        timeout_(options.transfer_timeout) {
    int n = std::max(1, options.connections_per_peer);
    fds_.resize(n, -1);
    for (int i = 0; i < n; ++i) workers_.emplace_back([this, i] { Work(i); });
  }

  ~TcpChannel() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      for (int fd : fds_)
        if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    for (const Slice& s : queue_) s.Complete(CancelledError(peer_ + ": transfer engine closed"));
  }

  uint64_t max_slice_bytes() const override { return slice_bytes_; }

  void Submit(std::span<const Slice> slices) override {
    {
      std::lock_guard lock(mu_);
      if (!stopping_) {
        queue_.insert(queue_.end(), slices.begin(), slices.end());
        slices = {};
      }
    }
    if (!slices.empty()) {
      for (const Slice& s : slices) s.Complete(CancelledError(peer_ + ": transfer engine closed"));
      return;
    }
    cv_.notify_all();
  }

 private:
  void Work(int index);
  // Moves `group` over `fd`; completes every slice. Non-OK: the connection
  // is no longer usable.
  Status Run(int fd, std::vector<Slice>& group);
  void FailAll(std::vector<Slice>& group, size_t from, const Status& error) {
    for (size_t i = from; i < group.size(); ++i) group[i].Complete(error);
  }

  // Constant after construction.
  const std::string peer_;
  const std::string host_;
  const uint16_t port_;
  const uint64_t instance_;
  const uint64_t slice_bytes_;
  const int buffer_bytes_;
  const std::chrono::milliseconds timeout_;
  std::vector<std::thread> workers_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Slice> queue_;  // guarded by mu_
  std::vector<int> fds_;     // guarded by mu_: for shutdown on close
  bool stopping_ = false;    // guarded by mu_
};

void TcpChannel::Work(int index) {
  UniqueFd conn;
  std::vector<Slice> group;
  while (true) {
    group.clear();
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      // Share the queue fairly among the workers, pipelining what is ours.
      size_t share = std::clamp<size_t>(queue_.size() / workers_.size(), 1, kMaxPipelineSlices);
      uint64_t bytes = 0;
      while (!queue_.empty() && group.size() < share &&
             (group.empty() || bytes + queue_.front().length <= kMaxPipelineBytes)) {
        bytes += queue_.front().length;
        group.push_back(queue_.front());
        queue_.pop_front();
      }
    }
    // Requests already past their deadline do not touch the wire.
    Clock::time_point now = Clock::now();
    std::erase_if(group, [&](const Slice& s) {
      if (s.deadline > now) return false;
      s.Complete(DeadlineExceededError(fmt::format("{}: transfer timed out ({} ms)", peer_,
                                                   timeout_.count())));
      return true;
    });
    if (group.empty()) continue;
    if (!conn.valid()) {
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(group.front().deadline - now);
      auto connected = ConnectTcp(host_, port_, std::max(wait, std::chrono::milliseconds(1)),
                                  buffer_bytes_);
      if (!connected.ok()) {
        FailAll(group, 0, connected.status().WithContext(peer_));
        continue;
      }
      conn = std::move(connected).value();
      std::lock_guard lock(mu_);
      if (stopping_) {
        FailAll(group, 0, CancelledError(peer_ + ": transfer engine closed"));
        return;
      }
      fds_[index] = conn.get();
    }
    // Every blocking call gives up by the group's last deadline.
    Clock::time_point last = group.front().deadline;
    for (const Slice& s : group) last = std::max(last, s.deadline);
    SetSocketTimeouts(conn.get(), std::max(std::chrono::duration_cast<std::chrono::milliseconds>(
                                               last - Clock::now()),
                                           std::chrono::milliseconds(1)));
    Status s = Run(conn.get(), group);
    if (!s.ok()) {
      std::lock_guard lock(mu_);
      fds_[index] = -1;
      conn.Reset();
    }
  }
}

Status TcpChannel::Run(int fd, std::vector<Slice>& group) {
  const size_t n = group.size();
  std::vector<f::RequestHeader> headers(n);
  std::vector<iovec> iov;
  iov.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    const Slice& s = group[i];
    headers[i] = f::RequestHeader{f::kRequestMagic,
                                  f::kProtocolVersion,
                                  s.opcode == OpCode::kRead ? f::kOpRead : f::kOpWrite,
                                  i + 1 < n ? f::kFlagMore : uint16_t{0},
                                  i + 1,
                                  instance_,
                                  s.remote_offset,
                                  s.length};
    iov.push_back({&headers[i], sizeof(headers[i])});
    if (s.opcode == OpCode::kWrite) iov.push_back({s.local, s.length});
  }
  Status sent = SendAll(fd, iov.data(), static_cast<int>(iov.size()), peer_.c_str());
  if (!sent.ok()) {
    FailAll(group, 0, sent);
    return sent;
  }
  // Answers, received with as few syscalls as the stream allows: every
  // answer is at least a header, so the headers of a run of writes are read
  // in one go; a read's data is received together with the next header.
  // Never more is read than is certainly there, so nothing is read twice.
  std::vector<f::ResponseHeader> answers(n);
  size_t have = 0;  // answers[0..have) hold received headers
  for (size_t i = 0; i < n; ++i) {
    const Slice& s = group[i];
    Status st;
    if (have <= i) {
      size_t run = 1;
      while (i + run < n && group[i + run - 1].opcode == OpCode::kWrite) ++run;
      st = RecvAll(fd, &answers[i], run * sizeof(f::ResponseHeader), peer_.c_str());
      have = i + run;
    }
    const f::ResponseHeader& resp = answers[i];
    if (st.ok() && (resp.magic != f::kResponseMagic || resp.request_id != i + 1))
      st = DataLossError(fmt::format("{}: answer out of step (magic {:#x}, id {} for {})", peer_,
                                     resp.magic, resp.request_id, i + 1));
    if (st.ok() && resp.code != 0) {
      // The target refused this request; the connection stays usable. The
      // text may sit partly in headers we already received.
      if (resp.length > f::kMaxErrorText) {
        st = DataLossError(peer_ + ": oversized error text");
      } else {
        std::string text(resp.length, '\0');
        size_t from_headers = std::min<size_t>(text.size(), (have - i - 1) * sizeof(f::ResponseHeader));
        std::memcpy(text.data(), answers.data() + i + 1, from_headers);
        // Whatever headers came after the text in the buffer are shifted
        // down; the rest of the text and of those headers is still to come.
        size_t buffered = (have - i - 1) * sizeof(f::ResponseHeader) - from_headers;
        char* next = reinterpret_cast<char*>(answers.data() + i + 1);
        std::memmove(next, next + from_headers, buffered);
        st = RecvAll(fd, text.data() + from_headers, text.size() - from_headers, peer_.c_str());
        if (st.ok() && buffered % sizeof(f::ResponseHeader) != 0) {
          size_t missing = sizeof(f::ResponseHeader) - buffered % sizeof(f::ResponseHeader);
          st = RecvAll(fd, next + buffered, missing, peer_.c_str());
          buffered += missing;
        }
        if (st.ok()) {
          have = i + 1 + buffered / sizeof(f::ResponseHeader);
          s.Complete(Status(static_cast<StatusCode>(resp.code), text).WithContext(peer_));
          continue;
        }
      }
    }
    if (st.ok() && s.opcode == OpCode::kRead) {
      if (resp.length != s.length) {
        st = DataLossError(fmt::format("{}: read answer of {} bytes for {} asked", peer_,
                                       resp.length, s.length));
      } else if (i + 1 < n && have == i + 1) {
        iovec data_and_next[2] = {{s.local, s.length}, {&answers[i + 1], sizeof(answers[i + 1])}};
        st = RecvAll(fd, data_and_next, 2, peer_.c_str());
        have = i + 2;
      } else {
        st = RecvAll(fd, s.local, s.length, peer_.c_str());
      }
    }
    if (!st.ok()) {
      FailAll(group, i, st);
      return st;
    }
    s.Complete(OkStatus());
  }
  return OkStatus();
}

class TcpTransport final : public Transport {
 public:
  explicit TcpTransport(const TransferEngineOptions& options) : options_(options) {}

  std::string_view name() const override { return "tcp"; }

  Status Serve(const LocalSegment& local, SegmentDescriptor* desc) override {
    server_ = std::make_unique<TcpServer>(local, options_.transfer_timeout,
                                          options_.socket_buffer_bytes);
    auto port = server_->Start(options_.local_hostname, options_.tcp_port);
    if (!port.ok())
      return port.status().WithContext("transfer engine tcp server (local_hostname/tcp_port)");
    desc->host = options_.local_hostname;
    desc->tcp_port = *port;
    return OkStatus();
  }

  bool CanReach(const SegmentDescriptor& desc) const override { return desc.tcp_port != 0; }

  StatusOr<std::unique_ptr<Channel>> Connect(const SegmentDescriptor& desc) override {
    return std::unique_ptr<Channel>(new TcpChannel(desc, options_));
  }

 private:
  const TransferEngineOptions options_;
  std::unique_ptr<TcpServer> server_;
};

}  // namespace

std::unique_ptr<Transport> NewTcpTransport(const TransferEngineOptions& options) {
  return std::make_unique<TcpTransport>(options);
}

}  // namespace crescent::transfer
