// The shared-memory transport, for peers on the same host.
//
// Target: regions from AllocateSegmentMemory are memfds. A control thread
// listens on an abstract unix socket and hands a peer, over SCM_RIGHTS, the
// memfd of any live buffer it asks for plus a control page that says which
// buffer ids are still live. Nothing has a name in the file system, so when
// every process holding a mapping has exited or unmapped, the kernel frees
// the memory: a dead process leaks nothing.
//
// Initiator: maps the buffers it needs and copies with memcpy inside
// Submit. After the copies it checks that the target is alive (its control
// connection has not hung up) and the buffer not revoked; otherwise the
// requests fail instead of succeeding against memory nobody will read. A
// watcher thread notices hang-ups at once and drops the mappings of dead
// targets, so their memory is returned to the system.
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "common/crc32c.h"
#include "common/logging.h"
#include "fmt/format.h"
#include "transfer/net_util.h"
#include "transfer/transfer_format.h"
#include "transfer/transport.h"

namespace crescent::transfer {

namespace f = format;

namespace {

constexpr size_t kControlBytes = f::kShmMaxBuffers * sizeof(uint32_t);
#ifdef MADV_POPULATE_WRITE
constexpr int kMadvPopulateWrite = MADV_POPULATE_WRITE;
#else
constexpr int kMadvPopulateWrite = 23;  // Linux 5.14
#endif

// A mapping of a peer's buffer; unmapped when the last user lets go.
struct Mapping {
  uint8_t* base = nullptr;
  uint64_t length = 0;
  ~Mapping() {
    if (base) ::munmap(base, length);
  }
};

// ---- target side ----

class ShmServer {
 public:
  ShmServer(const LocalSegment& local) : local_(local) {}
  ~ShmServer() {
    stopping_ = true;
    if (listener_.valid()) ::shutdown(listener_.get(), SHUT_RDWR);
    if (acceptor_.joinable()) acceptor_.join();
    std::lock_guard lock(mu_);
    for (auto& c : conns_) ::shutdown(c.fd.get(), SHUT_RDWR);
    for (auto& c : conns_) c.thread.join();
    if (control_) ::munmap(control_, kControlBytes);
  }

  Status Start(std::string* socket_name) {
    control_fd_.Reset(::memfd_create("crescent-shm-control", MFD_CLOEXEC));
    if (!control_fd_.valid()) return ErrnoToStatus(errno, "memfd_create for shm control page");
    if (::ftruncate(control_fd_.get(), kControlBytes) != 0)
      return ErrnoToStatus(errno, "sizing shm control page");
    void* p = ::mmap(nullptr, kControlBytes, PROT_READ | PROT_WRITE, MAP_SHARED, control_fd_.get(), 0);
    if (p == MAP_FAILED) return ErrnoToStatus(errno, "mapping shm control page");
    control_ = static_cast<std::atomic<uint32_t>*>(p);
    *socket_name = fmt::format("crescent-shm-{}-{:016x}", getpid(), local_.instance);
    ASSIGN_OR_RETURN(listener_, ListenUnixAbstract(*socket_name));
    acceptor_ = std::thread([this] { AcceptLoop(); });
    return OkStatus();
  }

  void SetState(uint32_t id, uint32_t state) {
    if (id < f::kShmMaxBuffers) control_[id].store(state, std::memory_order_seq_cst);
  }

 private:
  struct Conn {
    UniqueFd fd;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  void AcceptLoop() {
    while (!stopping_) {
      int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;
      }
      std::lock_guard lock(mu_);
      std::erase_if(conns_, [](Conn& c) {
        if (!c.done) return false;
        c.thread.join();
        return true;
      });
      Conn& c = conns_.emplace_back();
      c.fd.Reset(fd);
      c.thread = std::thread([this, &c] {
        Serve(c.fd.get());
        c.done = true;
      });
    }
  }

  void Reply(int fd, const Status& s, uint64_t length, int pass_fd) {
    f::ShmReply r{f::kShmReplyMagic, static_cast<uint16_t>(s.code()), 0, length};
    SendWithFd(fd, &r, sizeof(r), s.ok() ? pass_fd : -1).IgnoreError();
  }

  void Serve(int fd) {
    f::ShmHello hello;
    int ignored = -1;
    if (!RecvWithFd(fd, &hello, sizeof(hello), &ignored).ok() || hello.magic != f::kShmHelloMagic)
      return;
    if (hello.instance != local_.instance) {
      Reply(fd, FailedPreconditionError("stale instance"), 0, -1);
      return;
    }
    Reply(fd, OkStatus(), kControlBytes, control_fd_.get());
    while (!stopping_) {
      f::ShmMapRequest req;
      if (!RecvWithFd(fd, &req, sizeof(req), &ignored).ok() || req.magic != f::kShmMapMagic) return;
      std::shared_ptr<const Region> r = local_.registry->FindById(req.buffer_id);
      if (!r || r->memfd < 0) {
        Reply(fd, NotFoundError("no such shared buffer"), 0, -1);
        continue;
      }
      Reply(fd, OkStatus(), r->length, r->memfd);
    }
  }

  const LocalSegment local_;
  UniqueFd control_fd_;
  std::atomic<uint32_t>* control_ = nullptr;  // kShmMaxBuffers states
  UniqueFd listener_;
  std::thread acceptor_;
  std::atomic<bool> stopping_{false};
  std::mutex mu_;
  std::list<Conn> conns_;  // guarded by mu_
};

// ---- initiator side ----

class ShmTransport;

class ShmChannel final : public Channel {
 public:
  ShmChannel(std::string peer, UniqueFd sock, const std::atomic<uint32_t>* control)
      : peer_(std::move(peer)), sock_(std::move(sock)), control_(control) {}
  ~ShmChannel() override;

  uint64_t max_slice_bytes() const override { return UINT64_MAX; }
  void Submit(std::span<const Slice> slices) override;

  int socket() const { return sock_.get(); }
  // The target hung up: drop every mapping (in-flight copies keep theirs).
  void MarkDead() {
    std::lock_guard lock(mu_);
    dead_ = true;
    mappings_.clear();
  }
  ShmTransport* owner = nullptr;

 private:
  StatusOr<std::shared_ptr<Mapping>> Map(uint32_t id);
  static void PopulateInBackground(std::shared_ptr<Mapping> m);
  bool Live(uint32_t id) const {
    return control_[id].load(std::memory_order_seq_cst) == f::kShmBufferLive;
  }

  const std::string peer_;
  UniqueFd sock_;
  const std::atomic<uint32_t>* const control_;  // mapped read-only; unmapped in the dtor
  std::mutex mu_;
  bool dead_ = false;                                                  // guarded by mu_
  std::unordered_map<uint32_t, std::shared_ptr<Mapping>> mappings_;  // guarded by mu_
};

// Watches the control sockets of every shm channel for hang-ups.
class ShmTransport final : public Transport {
 public:
  explicit ShmTransport(const TransferEngineOptions& options) : options_(options) {
    epoll_.Reset(::epoll_create1(EPOLL_CLOEXEC));
    wake_.Reset(::eventfd(0, EFD_CLOEXEC));
    epoll_event ev{EPOLLIN, {.fd = wake_.get()}};
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev);
    watcher_ = std::thread([this] { Watch(); });
  }
  ~ShmTransport() override {
    uint64_t one = 1;
    ssize_t rc = ::write(wake_.get(), &one, sizeof(one));
    (void)rc;
    watcher_.join();
  }

  std::string_view name() const override { return "shm"; }

  Status Serve(const LocalSegment& local, SegmentDescriptor* desc) override {
    server_ = std::make_unique<ShmServer>(local);
    return server_->Start(&desc->shm_socket);
  }
  void Revoke(const Region& region) override {
    if (server_ && region.memfd >= 0) server_->SetState(region.id, f::kShmBufferRevoked);
  }
  void Expose(const Region& region) override {
    if (server_ && region.memfd >= 0) server_->SetState(region.id, f::kShmBufferLive);
  }

  bool CanReach(const SegmentDescriptor& desc) const override {
    return !desc.shm_socket.empty() && desc.host_id == HostId();
  }

  StatusOr<std::unique_ptr<Channel>> Connect(const SegmentDescriptor& desc) override;

  void Forget(ShmChannel* channel) {
    std::lock_guard lock(mu_);
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, channel->socket(), nullptr);
    channels_.erase(channel->socket());
  }

 private:
  void Watch() {
    epoll_event events[16];
    while (true) {
      int n = ::epoll_wait(epoll_.get(), events, 16, -1);
      for (int i = 0; i < n; ++i) {
        if (events[i].data.fd == wake_.get()) return;
        std::lock_guard lock(mu_);
        auto it = channels_.find(events[i].data.fd);
        if (it == channels_.end()) continue;
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->first, nullptr);
        spdlog::info("shm transport: peer hung up; releasing its mapped memory");
        it->second->MarkDead();
      }
    }
  }

  const TransferEngineOptions options_;
  std::unique_ptr<ShmServer> server_;
  UniqueFd epoll_, wake_;
  std::thread watcher_;
  std::mutex mu_;
  std::unordered_map<int, ShmChannel*> channels_;  // guarded by mu_; by socket fd
  friend class ShmChannel;
};

ShmChannel::~ShmChannel() {
  if (owner) owner->Forget(this);
  ::munmap(const_cast<std::atomic<uint32_t>*>(control_), kControlBytes);
}

StatusOr<std::shared_ptr<Mapping>> ShmChannel::Map(uint32_t id) {
  std::lock_guard lock(mu_);
  if (dead_) return UnavailableError(peer_ + ": target process is gone (shm socket hung up)");
  auto it = mappings_.find(id);
  if (it != mappings_.end()) return it->second;
  f::ShmMapRequest req{f::kShmMapMagic, id};
  RETURN_IF_ERROR(SendWithFd(sock_.get(), &req, sizeof(req), -1).WithContext(peer_));
  f::ShmReply reply;
  int fd = -1;
  RETURN_IF_ERROR(RecvWithFd(sock_.get(), &reply, sizeof(reply), &fd).WithContext(peer_));
  UniqueFd owned(fd);
  if (reply.magic != f::kShmReplyMagic) return DataLossError(peer_ + ": bad shm reply");
  if (reply.code != 0 || fd < 0)
    return NotFoundError(fmt::format("{}: buffer {} is no longer registered", peer_, id));
  void* p = ::mmap(nullptr, reply.length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ErrnoToStatus(errno, peer_ + ": mapping shared buffer");
  auto m = std::make_shared<Mapping>();
  m->base = static_cast<uint8_t*>(p);
  m->length = reply.length;
  mappings_[id] = m;
  PopulateInBackground(m);
  return m;
}

void ShmChannel::PopulateInBackground(std::shared_ptr<Mapping> m) {
  // The first access to each page through a new mapping traps; on this
  // project's VM each trap costs ~12 us (a 256 KiB copy into untouched pages
  // runs at ~0.3 GB/s instead of ~15), and filling the page tables with
  // MADV_POPULATE_WRITE does not spare it (measured: 0.45 GB/s on the first
  // pass after it, docs/benchmarks.md). What does is one read per page:
  // ~1 s per GiB of one core, done here off the transfer path, at idle
  // priority. Stops once nobody else holds the mapping (the target died or
  // the channel closed).
  std::thread([m = std::move(m)] {
    // Only when a CPU is otherwise idle: each touch traps, ~1 s of a core per
    // GiB, which must not compete with the transfers it is meant to speed up
    // (profiled at a third of store-bench's samples at normal priority).
    sched_param idle{};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
    constexpr uint64_t kChunk = 4 << 20;
    constexpr uint64_t kPage = 4096;
    bool populate = true;
    for (uint64_t at = 0; at < m->length && m.use_count() > 1; at += kChunk) {
      const uint64_t n = std::min(kChunk, m->length - at);
      // Page tables in bulk (a no-op before Linux 5.14), then the touch.
      if (populate && ::madvise(m->base + at, n, kMadvPopulateWrite) != 0) populate = false;
      for (uint64_t p = at; p < at + n; p += kPage) {
        (void)*reinterpret_cast<volatile const uint8_t*>(m->base + p);
      }
    }
  }).detach();
}

void ShmChannel::Submit(std::span<const Slice> slices) {
  // The buffer offsets of the descriptor are checked by the engine; the
  // mapping length is checked again here against the target's memfd size.
  std::vector<Status> results(slices.size());
  // Consecutive slices mostly hit one buffer: look its mapping up once.
  uint32_t mapped_id = UINT32_MAX;
  StatusOr<std::shared_ptr<Mapping>> m = UnavailableError("unmapped");
  for (size_t i = 0; i < slices.size(); ++i) {
    const Slice& s = slices[i];
    if (s.buffer_id != mapped_id) {
      m = Map(s.buffer_id);
      mapped_id = m.ok() ? s.buffer_id : UINT32_MAX;
    }
    if (!m.ok()) {
      results[i] = m.status();
      continue;
    }
    uint64_t at = s.remote_offset - s.buffer_offset;
    if (at > (*m)->length || s.length > (*m)->length - at) {
      results[i] = OutOfRangeError(fmt::format("{}: range beyond shared buffer {}", peer_, s.buffer_id));
      continue;
    }
    if (!Live(s.buffer_id)) {
      results[i] = NotFoundError(fmt::format("{}: buffer {} was unregistered", peer_, s.buffer_id));
      continue;
    }
    uint8_t* remote = (*m)->base + at;
    if (s.opcode == OpCode::kRead) {
      // A fused read-and-sum measured slower than memcpy then a CRC of the
      // (now cached) destination; writes gain from fusing.
      std::memcpy(s.local, remote, s.length);
      if (s.crc32c) *s.crc32c = Crc32c(s.local, s.length);
    } else if (s.crc32c) {
      *s.crc32c = Crc32cCopy(remote, s.local, s.length);
    } else {
      std::memcpy(remote, s.local, s.length);
    }
    if (!Live(s.buffer_id))
      results[i] = NotFoundError(
          fmt::format("{}: buffer {} was unregistered during the copy", peer_, s.buffer_id));
  }
  // One liveness check covers the whole submit: if the target died at any
  // point during it, none of these requests completes.
  if (PeerHungUp(sock_.get())) {
    MarkDead();
    for (auto& r : results)
      if (r.ok()) r = UnavailableError(peer_ + ": target process died during the transfer");
  }
  for (size_t i = 0; i < slices.size(); ++i) slices[i].Complete(results[i]);
}

StatusOr<std::unique_ptr<Channel>> ShmTransport::Connect(const SegmentDescriptor& desc) {
  std::string peer = fmt::format("segment '{}' (shm @{})", desc.name, desc.shm_socket);
  ASSIGN_OR_RETURN(UniqueFd sock, ConnectUnixAbstract(desc.shm_socket));
  f::ShmHello hello{f::kShmHelloMagic, 0, desc.instance};
  RETURN_IF_ERROR(SendWithFd(sock.get(), &hello, sizeof(hello), -1).WithContext(peer));
  f::ShmReply reply;
  int fd = -1;
  RETURN_IF_ERROR(RecvWithFd(sock.get(), &reply, sizeof(reply), &fd).WithContext(peer));
  UniqueFd control_fd(fd);
  if (reply.magic != f::kShmReplyMagic || reply.code != 0 || fd < 0 || reply.length != kControlBytes)
    return FailedPreconditionError(peer + ": refused the shm connection (stale descriptor?)");
  void* p = ::mmap(nullptr, kControlBytes, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ErrnoToStatus(errno, peer + ": mapping control page");
  int sock_fd = sock.get();
  auto channel = std::make_unique<ShmChannel>(peer, std::move(sock),
                                              static_cast<const std::atomic<uint32_t>*>(p));
  channel->owner = this;
  std::lock_guard lock(mu_);
  channels_[sock_fd] = channel.get();
  epoll_event ev{EPOLLRDHUP | EPOLLHUP, {.fd = sock_fd}};
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, sock_fd, &ev);
  return std::unique_ptr<Channel>(std::move(channel));
}

// ---- our own segment ----

class LocalChannel final : public Channel {
 public:
  explicit LocalChannel(MemoryRegistry* registry) : registry_(registry) {}
  uint64_t max_slice_bytes() const override { return UINT64_MAX; }
  void Submit(std::span<const Slice> slices) override {
    for (const Slice& s : slices) {
      auto r = registry_->FindByOffset(s.remote_offset, s.length);
      if (!r.ok()) {
        s.Complete(r.status().WithContext("own segment"));
        continue;
      }
      uint8_t* p = (*r)->base + (s.remote_offset - (*r)->segment_offset);
      if (s.opcode == OpCode::kRead) {
        std::memmove(s.local, p, s.length);
        if (s.crc32c) *s.crc32c = Crc32c(s.local, s.length);
      } else if (s.crc32c && (s.local + s.length <= p || p + s.length <= s.local)) {
        *s.crc32c = Crc32cCopy(p, s.local, s.length);
      } else {
        std::memmove(p, s.local, s.length);
        if (s.crc32c) *s.crc32c = Crc32c(p, s.length);
      }
      s.Complete(OkStatus());
    }
  }

 private:
  MemoryRegistry* const registry_;
};

}  // namespace

std::unique_ptr<Transport> NewShmTransport(const TransferEngineOptions& options) {
  return std::make_unique<ShmTransport>(options);
}

std::unique_ptr<Channel> NewLocalChannel(MemoryRegistry* registry) {
  return std::make_unique<LocalChannel>(registry);
}

}  // namespace crescent::transfer
