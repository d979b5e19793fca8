// Blocking socket helpers for the transports: every errno becomes a Status
// through ErrnoToStatus, with the peer named by the caller's `what`.
// Internal to src/transfer.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include "common/status.h"

namespace crescent::transfer {

// Owns a file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) { Reset(); fd_ = std::exchange(o.fd_, -1); }
    return *this;
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() { return std::exchange(fd_, -1); }
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Connects with a timeout; the socket is blocking, TCP_NODELAY, and has
// SO_SNDBUF/SO_RCVBUF = buffer_bytes when > 0.
StatusOr<UniqueFd> ConnectTcp(const std::string& host, uint16_t port,
                              std::chrono::milliseconds timeout, int buffer_bytes);
// Listens on host:port (port 0 = any); returns the fd and the bound port.
StatusOr<std::pair<UniqueFd, uint16_t>> ListenTcp(const std::string& host, uint16_t port);
void TuneTcpSocket(int fd, int buffer_bytes);

// Blocking send/recv timeouts (SO_SNDTIMEO/SO_RCVTIMEO); 0 = none.
void SetSocketTimeouts(int fd, std::chrono::milliseconds timeout);

// Sends every byte of iov[0..count) (modifies iov). A timeout is
// DEADLINE_EXCEEDED, a closed peer UNAVAILABLE.
Status SendAll(int fd, struct iovec* iov, int count, const char* what);
Status SendAll(int fd, const void* data, size_t length, const char* what);
// Receives exactly `length` bytes. Peer closed -> UNAVAILABLE.
Status RecvAll(int fd, void* data, size_t length, const char* what);
// Fills every iov[0..count) (modifies iov): one syscall when all is there.
Status RecvAll(int fd, struct iovec* iov, int count, const char* what);

// Unix-domain helpers for the shared-memory control socket (abstract
// namespace: `name` without the leading NUL).
StatusOr<UniqueFd> ListenUnixAbstract(const std::string& name);
StatusOr<UniqueFd> ConnectUnixAbstract(const std::string& name);
// One message of `length` bytes plus, when fd_to_pass >= 0, an fd.
Status SendWithFd(int sock, const void* data, size_t length, int fd_to_pass);
// Receives exactly `length` bytes; *received_fd is the attached fd or -1.
Status RecvWithFd(int sock, void* data, size_t length, int* received_fd);

// True when the peer of a connected socket has hung up (cheap: one poll).
bool PeerHungUp(int sock);

}  // namespace crescent::transfer
