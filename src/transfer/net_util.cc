#include "transfer/net_util.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "fmt/format.h"

namespace crescent::transfer {

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

namespace {

Status IoError(int err, const char* what, const char* verb) {
  if (err == EAGAIN || err == EWOULDBLOCK)
    return DeadlineExceededError(fmt::format("{}: {} timed out", what, verb));
  if (err == EPIPE || err == ECONNRESET)
    return UnavailableError(fmt::format("{}: connection lost during {} ({})", what, verb,
                                        std::strerror(err)));
  return ErrnoToStatus(err, fmt::format("{}: {}", what, verb));
}

StatusOr<addrinfo*> Resolve(const std::string& host, uint16_t port, bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  if (passive) hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  std::string service = std::to_string(port);
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0 || !res)
    return UnavailableError(
        fmt::format("cannot resolve host '{}' ({}); check local_hostname", host, gai_strerror(rc)));
  return res;
}

}  // namespace

void TuneTcpSocket(int fd, int buffer_bytes) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (buffer_bytes > 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer_bytes, sizeof(buffer_bytes));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof(buffer_bytes));
  }
}

StatusOr<UniqueFd> ConnectTcp(const std::string& host, uint16_t port,
                              std::chrono::milliseconds timeout, int buffer_bytes) {
  ASSIGN_OR_RETURN(addrinfo * res, Resolve(host, port, false));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(res, freeaddrinfo);
  UniqueFd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return ErrnoToStatus(errno, "socket");
  TuneTcpSocket(fd.get(), buffer_bytes);
  std::string what = fmt::format("connect to {}:{}", host, port);
  if (::connect(fd.get(), res->ai_addr, res->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) return ErrnoToStatus(errno, what);
    pollfd p{fd.get(), POLLOUT, 0};
    int rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (rc == 0) return DeadlineExceededError(fmt::format("{}: timed out", what));
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (rc < 0) err = errno;
    if (err != 0) return ErrnoToStatus(err, what);
  }
  int flags = fcntl(fd.get(), F_GETFL);
  fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

StatusOr<std::pair<UniqueFd, uint16_t>> ListenTcp(const std::string& host, uint16_t port) {
  ASSIGN_OR_RETURN(addrinfo * res, Resolve(host, port, true));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(res, freeaddrinfo);
  UniqueFd fd(::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoToStatus(errno, "socket");
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd.get(), res->ai_addr, res->ai_addrlen) != 0)
    return ErrnoToStatus(errno, fmt::format("bind tcp {}:{} (pick another port or 0)", host, port));
  if (::listen(fd.get(), 128) != 0) return ErrnoToStatus(errno, "listen");
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  return std::make_pair(std::move(fd), ntohs(addr.sin_port));
}

void SetSocketTimeouts(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = timeout.count() / 1000;
  tv.tv_usec = (timeout.count() % 1000) * 1000;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

namespace {
// Drops the first `done` bytes from the iovec array (after a partial
// sendmsg/recvmsg): whole entries are skipped, a partial one is trimmed.
void AdvanceIov(size_t done, struct iovec** iov, int* count) {
  while (*count > 0 && done >= (*iov)->iov_len) {
    done -= (*iov)->iov_len;
    ++*iov;
    --*count;
  }
  if (*count > 0) {
    (*iov)->iov_base = static_cast<char*>((*iov)->iov_base) + done;
    (*iov)->iov_len -= done;
  }
}
}  // namespace

Status SendAll(int fd, struct iovec* iov, int count, const char* what) {
  while (count > 0) {
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = std::min(count, IOV_MAX);
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(errno, what, "send");
    }
    AdvanceIov(static_cast<size_t>(n), &iov, &count);
  }
  return OkStatus();
}

Status SendAll(int fd, const void* data, size_t length, const char* what) {
  iovec iov{const_cast<void*>(data), length};
  return SendAll(fd, &iov, 1, what);
}

Status RecvAll(int fd, void* data, size_t length, const char* what) {
  char* p = static_cast<char*>(data);
  while (length > 0) {
    ssize_t n = ::recv(fd, p, length, MSG_WAITALL);
    if (n == 0)
      return UnavailableError(fmt::format("{}: peer closed the connection", what));
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(errno, what, "receive");
    }
    p += n;
    length -= static_cast<size_t>(n);
  }
  return OkStatus();
}

Status RecvAll(int fd, struct iovec* iov, int count, const char* what) {
  while (count > 0) {
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = std::min(count, IOV_MAX);
    ssize_t n = ::recvmsg(fd, &msg, MSG_WAITALL);
    if (n == 0) return UnavailableError(fmt::format("{}: peer closed the connection", what));
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(errno, what, "receive");
    }
    AdvanceIov(static_cast<size_t>(n), &iov, &count);
  }
  return OkStatus();
}

namespace {
socklen_t AbstractAddress(const std::string& name, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  size_t n = std::min(name.size(), sizeof(addr->sun_path) - 1);
  std::memcpy(addr->sun_path + 1, name.data(), n);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}
}  // namespace

StatusOr<UniqueFd> ListenUnixAbstract(const std::string& name) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoToStatus(errno, "unix socket");
  sockaddr_un addr;
  socklen_t len = AbstractAddress(name, &addr);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0)
    return ErrnoToStatus(errno, fmt::format("bind unix socket @{}", name));
  if (::listen(fd.get(), 64) != 0) return ErrnoToStatus(errno, "listen unix");
  return fd;
}

StatusOr<UniqueFd> ConnectUnixAbstract(const std::string& name) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoToStatus(errno, "unix socket");
  sockaddr_un addr;
  socklen_t len = AbstractAddress(name, &addr);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0)
    return ErrnoToStatus(errno, fmt::format("connect unix socket @{}", name));
  return fd;
}

Status SendWithFd(int sock, const void* data, size_t length, int fd_to_pass) {
  iovec iov{const_cast<void*>(data), length};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd_to_pass >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd_to_pass, sizeof(int));
  }
  // Messages are tiny (< 64 bytes): one sendmsg moves them whole.
  ssize_t n;
  do n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) return IoError(errno, "shm control socket", "send");
  if (static_cast<size_t>(n) != length) return InternalError("shm control socket: short send");
  return OkStatus();
}

Status RecvWithFd(int sock, void* data, size_t length, int* received_fd) {
  *received_fd = -1;
  iovec iov{data, length};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do n = ::recvmsg(sock, &msg, MSG_WAITALL | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n == 0) return UnavailableError("shm control socket: peer closed the connection");
  if (n < 0) return IoError(errno, "shm control socket", "receive");
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
      std::memcpy(received_fd, CMSG_DATA(c), sizeof(int));
  if (static_cast<size_t>(n) != length) {
    if (*received_fd >= 0) ::close(*received_fd);
    *received_fd = -1;
    return InternalError("shm control socket: short message");
  }
  return OkStatus();
}

bool PeerHungUp(int sock) {
  pollfd p{sock, POLLRDHUP, 0};
  int rc = ::poll(&p, 1, 0);
  return rc != 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

}  // namespace crescent::transfer
