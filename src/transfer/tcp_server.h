// Target side of the tcp transport: serves peers' READ/WRITE requests
// against the registered regions, one thread per connection (blocking
// I/O: no busy polling; connections are few and long-lived, pooled by the
// initiators). Data goes straight between the socket and the region.
// Internal to src/transfer.
#pragma once

#include <atomic>
#include <chrono>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "transfer/net_util.h"
#include "transfer/transfer_format.h"
#include "transfer/transport.h"

namespace crescent::transfer {

namespace f = format;

class TcpServer {
 public:
  TcpServer(const LocalSegment& local, std::chrono::milliseconds io_timeout, int buffer_bytes);
  // Closes the listener and every connection, joins the threads.
  ~TcpServer();

  // Listens on host:port (0 = any); returns the bound port.
  StatusOr<uint16_t> Start(const std::string& host, uint16_t port);

 private:
  struct Connection {
    UniqueFd fd;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void AcceptLoop();
  void Serve(Connection* conn);
  // Answers the request in *req; an error return ends the connection.
  // Sets *have_next when it already received the following header too.
  Status HandleRequest(int fd, f::RequestHeader* req, bool* have_next, std::vector<char>& scratch);
  // Waits for a request header; idle connections are fine.
  Status ReceiveHeader(int fd, f::RequestHeader* req);

  // Constant after construction.
  const LocalSegment local_;
  const std::chrono::milliseconds io_timeout_;
  const int buffer_bytes_;
  UniqueFd listener_;
  std::thread acceptor_;

  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::list<Connection> connections_;  // guarded by mu_
};

}  // namespace crescent::transfer
