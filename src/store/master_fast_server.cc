#include "store/master_fast_server.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>
#include <unordered_map>

#include "common/logging.h"
#include "store/fast_wire.h"
#include "transfer/net_util.h"

namespace crescent::store {
namespace {

using transfer::UniqueFd;

// A client that sends calls without reading the replies is not read from
// while this much of its replies waits: the master's memory stays bounded.
constexpr size_t kMaxUnsentReplyBytes = 16 << 20;
// Requests read ahead of serving them, per connection.
constexpr size_t kMaxBufferedRequestBytes = 4 << 20;

struct Conn {
  UniqueFd fd;
  std::string in;       // bytes received, not yet served (starts at a frame)
  std::string out;      // replies not yet sent
  size_t out_sent = 0;  // of `out`
  uint32_t events = EPOLLIN;  // what epoll watches for it
};

class FastServerImpl final : public FastServer {
 public:
  FastServerImpl(MasterCore* core, RpcCounters* counters) : core_(core), counters_(counters) {}

  ~FastServerImpl() override {
    if (wake_.valid()) {
      const uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof(one));
    }
    if (thread_.joinable()) thread_.join();
  }

  Status Init(const std::string& host, uint16_t port, const std::string& unix_name) {
    ASSIGN_OR_RETURN(auto listener, transfer::ListenTcp(host, port));
    listener_ = std::move(listener.first);
    port_ = listener.second;
    ::fcntl(listener_.get(), F_SETFL, ::fcntl(listener_.get(), F_GETFL) | O_NONBLOCK);
    if (!unix_name.empty()) {
      ASSIGN_OR_RETURN(unix_listener_, transfer::ListenUnixAbstract(unix_name));
      ::fcntl(unix_listener_.get(), F_SETFL, ::fcntl(unix_listener_.get(), F_GETFL) | O_NONBLOCK);
    }
    epoll_.Reset(::epoll_create1(EPOLL_CLOEXEC));
    wake_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!epoll_.valid() || !wake_.valid()) return ErrnoToStatus(errno, "fast port: epoll/eventfd");
    Watch(listener_.get(), EPOLLIN, EPOLL_CTL_ADD);
    if (unix_listener_.valid()) Watch(unix_listener_.get(), EPOLLIN, EPOLL_CTL_ADD);
    Watch(wake_.get(), EPOLLIN, EPOLL_CTL_ADD);
    thread_ = std::thread([this] { Loop(); });
    return OkStatus();
  }

  uint16_t port() const override { return port_; }

 private:
  void Watch(int fd, uint32_t events, int op) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    ::epoll_ctl(epoll_.get(), op, fd, &ev);
  }

  void Loop() {
    epoll_event events[128];
    for (;;) {
      const int n = ::epoll_wait(epoll_.get(), events, 128, -1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        spdlog::error("fast port: epoll_wait: {}", std::strerror(errno));
        return;
      }
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd == wake_.get()) return;
        if (fd == listener_.get() || fd == unix_listener_.get()) {
          Accept(fd);
          continue;
        }
        auto it = conns_.find(fd);
        if (it == conns_.end()) continue;
        Conn& c = it->second;
        bool alive = true;
        if ((events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) &&
            c.out.size() <= kMaxUnsentReplyBytes) {
          alive = Read(c);
        }
        // Serve what is buffered, flush, and serve again if the flush made
        // room (requests read earlier may wait for replies to drain).
        for (int round = 0; alive && round < 2; ++round) {
          if (!ServeBuffered(c)) alive = false;
          if (alive) alive = Flush(c);
        }
        if (!alive) conns_.erase(it);  // closes the fd (and leaves epoll)
      }
    }
  }

  void Accept(int listener) {
    for (;;) {
      const int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or a transient error: epoll tells us again
      if (listener == listener_.get()) transfer::TuneTcpSocket(fd, 0);
      Conn& c = conns_[fd];
      c.fd.Reset(fd);
      Watch(fd, EPOLLIN, EPOLL_CTL_ADD);
    }
  }

  // Reads what is there and serves every whole frame; false: close.
  // Reads what the socket holds, up to kMaxBufferedRequestBytes or the
  // first buffered frame, whichever is larger (the rest stays in the kernel
  // until the replies drain); false: the peer is gone.
  bool Read(Conn& c) {
    char buf[64 * 1024];
    size_t limit = kMaxBufferedRequestBytes;
    if (c.in.size() >= wire::kHeaderBytes) {
      // (A frame over the size limit is refused by ServeBuffered; no need to
      // read it.)
      const size_t first =
          std::min<size_t>(wire::ParseHeader(c.in.data()).body_len, wire::kMaxBodyBytes);
      limit = std::max<size_t>(limit, wire::kHeaderBytes + first);
    }
    while (c.in.size() < limit) {
      const ssize_t n = ::recv(c.fd.get(), buf, sizeof(buf), 0);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        if (static_cast<size_t>(n) < sizeof(buf)) break;
        continue;
      }
      if (n == 0) return false;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return false;
    }
    return true;
  }

  // Serves complete requests while the unsent replies stay under their
  // bound; false: a frame over the size limit (the connection is closed).
  bool ServeBuffered(Conn& c) {
    size_t at = 0;
    while (c.in.size() - at >= wire::kHeaderBytes && c.out.size() <= kMaxUnsentReplyBytes) {
      const wire::Header h = wire::ParseHeader(c.in.data() + at);
      if (h.body_len > wire::kMaxBodyBytes) {
        spdlog::warn("fast port: a {}-byte frame is over the limit; closing its connection",
                     h.body_len);
        return false;
      }
      if (c.in.size() - at - wire::kHeaderBytes < h.body_len) break;
      Serve(h, std::string_view(c.in.data() + at + wire::kHeaderBytes, h.body_len), &c.out);
      at += wire::kHeaderBytes + h.body_len;
    }
    c.in.erase(0, at);
    return true;
  }

  bool Flush(Conn& c) {
    while (c.out_sent < c.out.size()) {
      const ssize_t n = ::send(c.fd.get(), c.out.data() + c.out_sent, c.out.size() - c.out_sent,
                               MSG_NOSIGNAL);
      if (n > 0) {
        c.out_sent += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      return false;
    }
    if (c.out_sent == c.out.size()) {
      c.out.clear();
      c.out_sent = 0;
    }
    uint32_t events = 0;
    if (c.out.size() <= kMaxUnsentReplyBytes) events |= EPOLLIN;
    if (!c.out.empty()) events |= EPOLLOUT;
    if (events != c.events) {
      Watch(c.fd.get(), events, EPOLL_CTL_MOD);
      c.events = events;
    }
    return true;
  }

  // Appends the reply to one request.
  void Serve(const wire::Header& h, std::string_view body, std::string* out) {
    const size_t header_at = out->size();
    wire::AppendHeader(out, 0, h.call_id, h.method);
    const size_t body_at = out->size();
    wire::Writer w(out);
    w.U8(0);  // call-level status: OK, unless replaced below
    wire::Reader r(body);
    const Status s = Dispatch(h.method, r, w);
    if (!s.ok() || !r.done()) {
      out->resize(body_at);
      w.Status(!s.ok() ? s
                       : InvalidArgumentError("fast port: malformed body for method " +
                                              std::to_string(h.method)));
    }
    const auto len = static_cast<uint32_t>(out->size() - body_at);
    std::memcpy(out->data() + header_at, &len, 4);
  }

  void Count(MasterRpc rpc, size_t items, bool failed) {
    const int i = static_cast<int>(rpc);
    counters_->requests[i].fetch_add(1, std::memory_order_relaxed);
    counters_->items[i].fetch_add(items, std::memory_order_relaxed);
    if (failed) counters_->failures[i].fetch_add(1, std::memory_order_relaxed);
  }

  std::vector<std::string> Keys(wire::Reader& r) {
    std::vector<std::string> keys(r.Count(4));
    for (auto& k : keys) k = r.Str();
    return keys;
  }

  void Statuses(MasterRpc rpc, const std::vector<Status>& st, wire::Writer& w) {
    bool failed = false;
    w.U32(static_cast<uint32_t>(st.size()));
    for (const auto& s : st) {
      w.Status(s);
      failed |= !s.ok();
    }
    Count(rpc, st.size(), failed);
  }

  // Decodes, calls the core, encodes. A non-OK return fails the call.
  Status Dispatch(uint8_t method, wire::Reader& r, wire::Writer& w) {
    switch (method) {
      case wire::kPutStart: {
        std::vector<PutStartArgs> items(r.Count(21));
        for (auto& a : items) {
          a.key = r.Str();
          a.size = r.U64();
          a.replica_num = r.U32();
          a.soft_pin = r.U8() != 0;
          a.preferred_segment = r.Str();
        }
        if (!r.done()) return OkStatus();
        auto res = core_->BatchPutStart(items);
        bool failed = false;
        w.U32(static_cast<uint32_t>(res.size()));
        for (const auto& x : res) {
          w.Status(x.status());
          if (x.ok()) w.Replicas(*x); else failed = true;
        }
        Count(MasterRpc::kBatchPutStart, res.size(), failed);
        return OkStatus();
      }
      case wire::kPutEnd: {
        const uint32_t n = r.Count(8);
        std::vector<std::string> keys(n);
        std::vector<uint32_t> crcs(n);
        for (uint32_t i = 0; i < n; ++i) {
          keys[i] = r.Str();
          crcs[i] = r.U32();
        }
        if (!r.done()) return OkStatus();
        Statuses(MasterRpc::kBatchPutEnd, core_->BatchPutEnd(keys, crcs), w);
        return OkStatus();
      }
      case wire::kPutRevoke: {
        auto keys = Keys(r);
        if (!r.done()) return OkStatus();
        Statuses(MasterRpc::kBatchPutRevoke, core_->BatchPutRevoke(keys), w);
        return OkStatus();
      }
      case wire::kRemove: {
        auto keys = Keys(r);
        if (!r.done()) return OkStatus();
        Statuses(MasterRpc::kBatchRemove, core_->BatchRemove(keys), w);
        return OkStatus();
      }
      case wire::kGetReplicaList: {
        auto keys = Keys(r);
        if (!r.done()) return OkStatus();
        auto res = core_->BatchGetReplicaList(keys);
        bool failed = false;
        w.U32(static_cast<uint32_t>(res.size()));
        for (const auto& x : res) {
          w.Status(x.status());
          if (!x.ok()) {
            failed = true;
            continue;
          }
          w.U64(x->size);
          w.U32(x->crc32c);
          w.U8(x->soft_pin ? 1 : 0);
          w.I64(x->lease_ms);
          w.Replicas(x->replicas);
        }
        Count(MasterRpc::kBatchGetReplicaList, res.size(), failed);
        return OkStatus();
      }
      case wire::kExist: {
        auto keys = Keys(r);
        if (!r.done()) return OkStatus();
        auto res = core_->BatchExist(keys);
        bool failed = false;
        w.U32(static_cast<uint32_t>(res.size()));
        for (const auto& x : res) {
          w.Status(x.status());
          if (x.ok()) w.U8(*x ? 1 : 0); else failed = true;
        }
        Count(MasterRpc::kBatchExist, res.size(), failed);
        return OkStatus();
      }
      case wire::kReserve: {
        std::string client_id = r.Str();
        const uint64_t size = r.U64();
        const uint64_t min_size = r.U64();
        std::string preferred = r.Str();
        if (!r.done()) return OkStatus();
        auto res = core_->Reserve(client_id, size, min_size, preferred);
        w.Status(res.status());
        if (res.ok()) {
          w.U64(res->id);
          w.Str(res->segment);
          w.U64(res->address);
          w.U64(res->size);
          w.I64(res->ttl_ms);
        }
        Count(MasterRpc::kReserve, 1, !res.ok());
        return OkStatus();
      }
      case wire::kCommit: {
        std::vector<CommitArgs> items(r.Count(33));
        for (auto& a : items) {
          a.reservation = r.U64();
          a.key = r.Str();
          a.address = r.U64();
          a.size = r.U64();
          a.crc32c = r.U32();
          a.soft_pin = r.U8() != 0;
        }
        if (!r.done()) return OkStatus();
        Statuses(MasterRpc::kCommit, core_->BatchCommit(items), w);
        return OkStatus();
      }
      case wire::kRelease: {
        const uint64_t id = r.U64();
        if (!r.done()) return OkStatus();
        const Status s = core_->Release(id);
        w.Status(s);
        Count(MasterRpc::kRelease, 1, !s.ok());
        return OkStatus();
      }
      default:
        return UnimplementedError("fast port: unknown method " + std::to_string(method) +
                                  "; client and master versions differ");
    }
  }

  MasterCore* const core_;
  RpcCounters* const counters_;
  UniqueFd listener_;
  UniqueFd unix_listener_;
  UniqueFd epoll_;
  UniqueFd wake_;
  uint16_t port_ = 0;
  std::unordered_map<int, Conn> conns_;  // the loop thread's only
  std::thread thread_;
};

}  // namespace

StatusOr<std::unique_ptr<FastServer>> FastServer::Start(const std::string& host, uint16_t port,
                                                        const std::string& unix_name,
                                                        MasterCore* core, RpcCounters* counters) {
  auto server = std::make_unique<FastServerImpl>(core, counters);
  Status s = server->Init(host, port, unix_name);
  if (!s.ok()) {
    return Status(s.code(), "master: cannot serve the fast port on " + host + ":" +
                                std::to_string(port) + " (" + s.message() +
                                "); pick another --fast-port or --fast-port -1 to turn it off");
  }
  return std::unique_ptr<FastServer>(std::move(server));
}

}  // namespace crescent::store
