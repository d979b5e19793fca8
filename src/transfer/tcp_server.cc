#include "transfer/tcp_server.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "common/logging.h"
#include "fmt/format.h"
#include "transfer/transfer_format.h"

namespace crescent::transfer {

namespace f = format;

TcpServer::TcpServer(const LocalSegment& local, std::chrono::milliseconds io_timeout,
                     int buffer_bytes)
    : local_(local), io_timeout_(io_timeout), buffer_bytes_(buffer_bytes) {}

TcpServer::~TcpServer() {
  stopping_ = true;
  if (listener_.valid()) ::shutdown(listener_.get(), SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  std::lock_guard lock(mu_);
  for (auto& c : connections_) ::shutdown(c.fd.get(), SHUT_RDWR);
  for (auto& c : connections_)
    if (c.thread.joinable()) c.thread.join();
}

StatusOr<uint16_t> TcpServer::Start(const std::string& host, uint16_t port) {
  ASSIGN_OR_RETURN(auto listening, ListenTcp(host, port));
  listener_ = std::move(listening.first);
  acceptor_ = std::thread([this] { AcceptLoop(); });
  return listening.second;
}

void TcpServer::AcceptLoop() {
  while (!stopping_) {
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (!stopping_) spdlog::warn("transfer tcp server: accept: {}", std::strerror(errno));
      return;
    }
    TuneTcpSocket(fd, buffer_bytes_);
    SetSocketTimeouts(fd, io_timeout_);
    std::lock_guard lock(mu_);
    // Reap finished connections so that the list stays short.
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (it->done) {
        it->thread.join();
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
    if (stopping_) {
      ::close(fd);
      return;
    }
    Connection& c = connections_.emplace_back();
    c.fd.Reset(fd);
    c.thread = std::thread([this, &c] { Serve(&c); });
  }
}

void TcpServer::Serve(Connection* conn) {
  std::vector<char> scratch;
  f::RequestHeader req;
  bool have_next = false;
  while (!stopping_) {
    Status s = have_next ? OkStatus() : ReceiveHeader(conn->fd.get(), &req);
    if (s.ok()) s = HandleRequest(conn->fd.get(), &req, &have_next, scratch);
    if (!s.ok()) {
      if (!stopping_ && s.code() != StatusCode::kUnavailable)
        spdlog::debug("transfer tcp server: closing connection: {}", s.ToString());
      break;
    }
  }
  ::shutdown(conn->fd.get(), SHUT_RDWR);
  conn->done = true;
}

namespace {

// Sends an error answer; the text tells the initiator what was wrong.
Status SendError(int fd, uint64_t request_id, const Status& error) {
  std::string text = error.message().substr(0, f::kMaxErrorText);
  f::ResponseHeader resp{f::kResponseMagic, static_cast<uint16_t>(error.code()), 0, request_id,
                         text.size()};
  iovec iov[2] = {{&resp, sizeof(resp)}, {text.data(), text.size()}};
  return SendAll(fd, iov, 2, "transfer tcp server");
}

}  // namespace

Status TcpServer::ReceiveHeader(int fd, f::RequestHeader* out) {
  f::RequestHeader& req = *out;
  // Idle connections are fine: wait for a header past the I/O timeout as
  // long as none of it has arrived.
  size_t got = 0;
  while (got < sizeof(req)) {
    ssize_t n = ::recv(fd, reinterpret_cast<char*>(&req) + got, sizeof(req) - got, MSG_WAITALL);
    if (n > 0) {
      got += static_cast<size_t>(n);
    } else if (n == 0) {
      return UnavailableError("initiator closed the connection");
    } else if (errno == EINTR || ((errno == EAGAIN || errno == EWOULDBLOCK) && got == 0)) {
      if (stopping_) return CancelledError("server stopping");
    } else {
      return ErrnoToStatus(errno, "transfer tcp server: receive request header");
    }
  }
  return OkStatus();
}

Status TcpServer::HandleRequest(int fd, f::RequestHeader* header, bool* have_next,
                                std::vector<char>& scratch) {
  const f::RequestHeader req = *header;
  *have_next = false;
  if (req.magic != f::kRequestMagic || req.version != f::kProtocolVersion ||
      (req.opcode != f::kOpRead && req.opcode != f::kOpWrite))
    return InvalidArgumentError(fmt::format(
        "transfer tcp server: bad request header (magic {:#x}, version {}, opcode {}): not a "
        "crescent transfer peer of this version",
        req.magic, req.version, req.opcode));

  Status check;
  std::shared_ptr<const Region> region;
  if (req.instance != local_.instance) {
    check = FailedPreconditionError(fmt::format(
        "segment '{}' was restarted (instance {:016x}, request for {:016x}); reopen the segment",
        local_.name, local_.instance, req.instance));
  } else {
    auto found = local_.registry->FindByOffset(req.offset, req.length);
    if (found.ok()) {
      region = std::move(found).value();
    } else {
      check = found.status().WithContext(fmt::format("segment '{}'", local_.name));
    }
  }

  if (!check.ok()) {
    if (req.opcode == f::kOpWrite) {
      // Keep the stream in step: consume the payload we refuse to store.
      scratch.resize(256 << 10);
      for (uint64_t left = req.length; left > 0;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(left, scratch.size()));
        RETURN_IF_ERROR(RecvAll(fd, scratch.data(), n, "transfer tcp server: discard payload"));
        left -= n;
      }
    }
    return SendError(fd, req.request_id, check);
  }

  uint8_t* data = region->base + (req.offset - region->segment_offset);
  if (req.opcode == f::kOpWrite) {
    // The payload, and the next header when the initiator said one follows.
    iovec in[2] = {{data, req.length}, {header, sizeof(*header)}};
    bool more = req.flags & f::kFlagMore;
    RETURN_IF_ERROR(RecvAll(fd, in, more ? 2 : 1, "transfer tcp server: receive write payload"));
    *have_next = more;
    f::ResponseHeader resp{f::kResponseMagic, 0, 0, req.request_id, 0};
    return SendAll(fd, &resp, sizeof(resp), "transfer tcp server: write ack");
  }
  f::ResponseHeader resp{f::kResponseMagic, 0, 0, req.request_id, req.length};
  iovec iov[2] = {{&resp, sizeof(resp)}, {data, req.length}};
  return SendAll(fd, iov, 2, "transfer tcp server: read payload");
}

}  // namespace crescent::transfer
