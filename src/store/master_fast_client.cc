#include "store/master_fast_client.h"

#include <algorithm>
#include <atomic>
#include <mutex>

#include "store/fast_wire.h"
#include "transfer/net_util.h"

namespace crescent::store {

using transfer::UniqueFd;

struct FastChannel::Impl {
  std::string host;
  uint16_t port = 0;
  std::string address;
  std::chrono::milliseconds timeout;
  std::string unix_name;
  std::atomic<bool> unix_failed{false};
  std::atomic<uint32_t> next_call{1};
  std::mutex mu;
  std::vector<UniqueFd> idle;  // guarded by mu

  StatusOr<UniqueFd> Take(bool* fresh) {
    {
      std::lock_guard lock(mu);
      if (!idle.empty()) {
        UniqueFd fd = std::move(idle.back());
        idle.pop_back();
        *fresh = false;
        return fd;
      }
    }
    *fresh = true;
    if (!unix_name.empty() && !unix_failed.load(std::memory_order_relaxed)) {
      auto fd = transfer::ConnectUnixAbstract(unix_name);
      if (fd.ok()) {
        transfer::SetSocketTimeouts(fd->get(), timeout);
        return std::move(*fd);
      }
      unix_failed = true;  // another host: TCP from now on
    }
    auto fd = transfer::ConnectTcp(host, port, std::min(timeout, std::chrono::milliseconds(2000)),
                                   0);
    if (!fd.ok()) return fd.status();
    transfer::SetSocketTimeouts(fd->get(), timeout);
    return std::move(*fd);
  }

  void Give(UniqueFd fd) {
    std::lock_guard lock(mu);
    idle.push_back(std::move(fd));
  }
};

FastChannel::FastChannel(std::string host, uint16_t port, std::chrono::milliseconds timeout,
                         std::string unix_name)
    : impl_(std::make_unique<Impl>()) {
  impl_->unix_name = std::move(unix_name);
  impl_->host = std::move(host);
  impl_->port = port;
  impl_->address = impl_->host + ":" + std::to_string(port);
  impl_->timeout = timeout;
}

FastChannel::~FastChannel() = default;

const std::string& FastChannel::address() const { return impl_->address; }

StatusOr<std::string> FastChannel::Call(uint8_t method, const std::string& body, bool* reached) {
  bool sink;
  if (reached == nullptr) reached = &sink;
  for (;;) {
    bool fresh = false;
    auto r = CallOnce(method, body, reached, &fresh);
    // An idle connection that the master closed (it restarted) fails at
    // once, before the request could be served: try a new one. Checking
    // every idle connection first would cost a syscall per call.
    if (r.ok() || fresh || r.status().code() != StatusCode::kUnavailable ||
        r.status().message().find("closed the connection") == std::string::npos) {
      return r;
    }
  }
}

StatusOr<std::string> FastChannel::CallOnce(uint8_t method, const std::string& body,
                                            bool* reached, bool* fresh) {
  *reached = false;
  const std::string where = "master fast port " + impl_->address;
  auto fd = impl_->Take(fresh);
  if (!fd.ok()) {
    return UnavailableError(where + " unreachable (" + fd.status().message() +
                            "); is `crescent master` running there?");
  }
  const uint32_t id = impl_->next_call.fetch_add(1, std::memory_order_relaxed);
  std::string header;
  wire::AppendHeader(&header, static_cast<uint32_t>(body.size()), id, method);
  struct iovec iov[2] = {{header.data(), header.size()},
                         {const_cast<char*>(body.data()), body.size()}};
  *reached = true;
  if (Status s = transfer::SendAll(fd->get(), iov, 2, "master fast port"); !s.ok()) {
    if (!*fresh) return UnavailableError(where + " closed the connection (" + s.message() + ")");
    return UnavailableError(where + ": sending failed (" + s.message() + ")");
  }
  char head[wire::kHeaderBytes];
  Status s = transfer::RecvAll(fd->get(), head, sizeof(head), "master fast port");
  if (!s.ok() && !*fresh && s.code() != StatusCode::kDeadlineExceeded) {
    return UnavailableError(where + " closed the connection (" + s.message() + ")");
  }
  const wire::Header h = wire::ParseHeader(head);
  if (s.ok() && (h.call_id != id || h.method != method || h.body_len > wire::kMaxBodyBytes)) {
    s = InternalError("a reply that does not match the call");
  }
  std::string reply(s.ok() ? h.body_len : 0, '\0');
  if (s.ok()) s = transfer::RecvAll(fd->get(), reply.data(), reply.size(), "master fast port");
  if (!s.ok()) {
    if (s.code() == StatusCode::kDeadlineExceeded) {
      return UnavailableError(where + " did not answer within " +
                              std::to_string(impl_->timeout.count()) + " ms");
    }
    return UnavailableError(where + ": " + s.message());
  }
  impl_->Give(std::move(*fd));
  wire::Reader r(reply.data(), reply.size());
  Status call = r.Status();
  if (!r.ok()) return InternalError(where + ": malformed reply");
  if (!call.ok()) return call;
  reply.erase(0, 1);  // the call's OK status
  return reply;
}

namespace {

std::string KeysBody(const std::vector<std::string>& keys) {
  std::string body;
  wire::Writer w(&body);
  w.U32(static_cast<uint32_t>(keys.size()));
  for (const auto& k : keys) w.Str(k);
  return body;
}

StatusOr<std::vector<Status>> ReadStatuses(const std::string& reply, size_t n) {
  wire::Reader r(reply.data(), reply.size());
  std::vector<Status> out(r.Count(1));
  for (auto& s : out) s = r.Status();
  if (!r.done() || out.size() != n) return InternalError("master fast port: malformed reply");
  return out;
}

}  // namespace

StatusOr<std::vector<StatusOr<std::vector<Replica>>>> FastChannel::BatchPutStart(
    const std::vector<PutStartArgs>& items, bool* reached) {
  std::string body;
  wire::Writer w(&body);
  w.U32(static_cast<uint32_t>(items.size()));
  for (const auto& a : items) {
    w.Str(a.key);
    w.U64(a.size);
    w.U32(a.replica_num);
    w.U8(a.soft_pin ? 1 : 0);
    w.Str(a.preferred_segment);
  }
  auto got = Call(wire::kPutStart, body, reached);
  if (!got.ok()) return got.status();
  const std::string& reply = *got;
  wire::Reader r(reply.data(), reply.size());
  const uint32_t n = r.Count(1);
  std::vector<StatusOr<std::vector<Replica>>> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    Status s = r.Status();
    if (s.ok()) out.emplace_back(r.Replicas()); else out.emplace_back(std::move(s));
  }
  if (!r.done() || out.size() != items.size()) {
    return InternalError("master fast port: malformed PutStart reply");
  }
  return out;
}

StatusOr<std::vector<Status>> FastChannel::BatchPutEnd(const std::vector<std::string>& keys,
                                                       const std::vector<uint32_t>& crcs,
                                                       bool* reached) {
  std::string body;
  wire::Writer w(&body);
  w.U32(static_cast<uint32_t>(keys.size()));
  for (size_t i = 0; i < keys.size(); ++i) {
    w.Str(keys[i]);
    w.U32(crcs[i]);
  }
  auto got = Call(wire::kPutEnd, body, reached);
  if (!got.ok()) return got.status();
  const std::string& reply = *got;
  return ReadStatuses(reply, keys.size());
}

StatusOr<std::vector<Status>> FastChannel::BatchPutRevoke(const std::vector<std::string>& keys,
                                                          bool* reached) {
  auto got = Call(wire::kPutRevoke, KeysBody(keys), reached);
  if (!got.ok()) return got.status();
  const std::string& reply = *got;
  return ReadStatuses(reply, keys.size());
}

StatusOr<std::vector<Status>> FastChannel::BatchRemove(const std::vector<std::string>& keys,
                                                       bool* reached) {
  auto got = Call(wire::kRemove, KeysBody(keys), reached);
  if (!got.ok()) return got.status();
  const std::string& reply = *got;
  return ReadStatuses(reply, keys.size());
}

StatusOr<std::vector<StatusOr<ObjectInfo>>> FastChannel::BatchGetReplicaList(
    const std::vector<std::string>& keys, bool* reached) {
  auto got = Call(wire::kGetReplicaList, KeysBody(keys), reached);
  if (!got.ok()) return got.status();
  const std::string& reply = *got;
  wire::Reader r(reply.data(), reply.size());
  const uint32_t n = r.Count(1);
  std::vector<StatusOr<ObjectInfo>> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    Status s = r.Status();
    if (!s.ok()) {
      out.emplace_back(std::move(s));
      continue;
    }
    ObjectInfo info;
    info.size = r.U64();
    info.crc32c = r.U32();
    info.soft_pin = r.U8() != 0;
    info.complete = true;
    info.lease_ms = r.I64();
    info.replicas = r.Replicas();
    out.emplace_back(std::move(info));
  }
  if (!r.done() || out.size() != keys.size()) {
    return InternalError("master fast port: malformed GetReplicaList reply");
  }
  return out;
}

StatusOr<std::vector<StatusOr<bool>>> FastChannel::BatchExist(const std::vector<std::string>& keys,
                                                              bool* reached) {
  auto got = Call(wire::kExist, KeysBody(keys), reached);
  if (!got.ok()) return got.status();
  const std::string& reply = *got;
  wire::Reader r(reply.data(), reply.size());
  const uint32_t n = r.Count(1);
  std::vector<StatusOr<bool>> out;
  out.reserve(n);
  for (uint32_t i = 0; i < n && r.ok(); ++i) {
    Status s = r.Status();
    if (s.ok()) out.emplace_back(r.U8() != 0); else out.emplace_back(std::move(s));
  }
  if (!r.done() || out.size() != keys.size()) {
    return InternalError("master fast port: malformed Exist reply");
  }
  return out;
}

StatusOr<Reservation> FastChannel::Reserve(const std::string& client_id, uint64_t size,
                                           uint64_t min_size, const std::string& preferred_segment,
                                           bool* reached) {
  std::string body;
  wire::Writer w(&body);
  w.Str(client_id);
  w.U64(size);
  w.U64(min_size);
  w.Str(preferred_segment);
  auto got = Call(wire::kReserve, body, reached);
  if (!got.ok()) return got.status();
  const std::string& reply = *got;
  wire::Reader r(reply.data(), reply.size());
  Status s = r.Status();
  Reservation out;
  if (s.ok()) {
    out.id = r.U64();
    out.segment = r.Str();
    out.address = r.U64();
    out.size = r.U64();
    out.ttl_ms = r.I64();
  }
  if (!r.done()) return InternalError("master fast port: malformed Reserve reply");
  RETURN_IF_ERROR(s);
  return out;
}

StatusOr<std::vector<Status>> FastChannel::BatchCommit(const std::vector<CommitArgs>& items,
                                                       bool* reached) {
  std::string body;
  wire::Writer w(&body);
  w.U32(static_cast<uint32_t>(items.size()));
  for (const auto& a : items) {
    w.U64(a.reservation);
    w.Str(a.key);
    w.U64(a.address);
    w.U64(a.size);
    w.U32(a.crc32c);
    w.U8(a.soft_pin ? 1 : 0);
  }
  auto got = Call(wire::kCommit, body, reached);
  if (!got.ok()) return got.status();
  const std::string& reply = *got;
  return ReadStatuses(reply, items.size());
}

Status FastChannel::Release(uint64_t reservation, bool* reached) {
  std::string body;
  wire::Writer w(&body);
  w.U64(reservation);
  auto got = Call(wire::kRelease, body, reached);
  if (!got.ok()) return got.status();
  const std::string& reply = *got;
  wire::Reader r(reply.data(), reply.size());
  Status s = r.Status();
  if (!r.done()) return InternalError("master fast port: malformed Release reply");
  return s;
}

}  // namespace crescent::store
