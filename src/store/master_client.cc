#include "store/master_client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <mutex>

#include "store/master_fast_client.h"
#include "store/proto/master.grpc.pb.h"
#include "store/proto_convert.h"
#include "store/store_format.h"

namespace crescent::store {

namespace {
int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

struct MasterClient::Impl {
  std::string address;
  MasterClientOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<rpc::Master::Stub> stub;

  std::mutex fast_mu;
  std::shared_ptr<FastChannel> fast;  // guarded by fast_mu
  int64_t fast_retry_ms = 0;          // guarded by fast_mu: no discovery before
  int64_t fast_backoff_ms = 5000;     // guarded by fast_mu

  // The master's fast port as a channel, discovered through Health; null
  // when there is none (or it failed recently): use gRPC.
  std::shared_ptr<FastChannel> Fast() {
    if (!options.use_fast_port) return nullptr;
    std::lock_guard lock(fast_mu);
    if (fast || NowMs() < fast_retry_ms) return fast;
    rpc::Empty req;
    rpc::HealthReply resp;
    if (!Call("Health", &rpc::Master::Stub::Health, req, &resp).ok()) {
      fast_retry_ms = NowMs() + 1000;
      return nullptr;
    }
    if (resp.fast_port() == 0 || resp.fast_port() > 65535) {
      fast_retry_ms = NowMs() + 30000;  // an old master, or the port is off
      return nullptr;
    }
    const size_t colon = address.rfind(':');
    fast = std::make_shared<FastChannel>(address.substr(0, colon),
                                         static_cast<uint16_t>(resp.fast_port()),
                                         options.rpc_timeout, resp.fast_unix());
    return fast;
  }

  // Whether a fast call's outcome stands. A transport failure drops the
  // channel (rediscovered next time: the master may have restarted
  // elsewhere); when nothing was sent the caller goes on with gRPC.
  template <typename T>
  bool Stands(const T& result, bool reached, const std::shared_ptr<FastChannel>& used) {
    if (result.ok() || result.status().code() != StatusCode::kUnavailable) return true;
    std::lock_guard lock(fast_mu);
    if (fast == used) {
      fast.reset();
      if (!reached) {
        // Unreachable (a firewall, say): each retry may cost a connect
        // timeout, so retry ever more rarely, up to every 5 minutes.
        fast_retry_ms = NowMs() + fast_backoff_ms;
        fast_backoff_ms = std::min<int64_t>(fast_backoff_ms * 2, 300000);
      }
    }
    return reached;
  }

  // Runs one unary call with the deadline; the one place gRPC errors
  // become Status.
  template <typename Req, typename Resp, typename Fn>
  Status Call(const char* what, Fn fn, const Req& req, Resp* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + options.rpc_timeout);
    grpc::Status s = (stub.get()->*fn)(&ctx, req, resp);
    if (s.ok()) return OkStatus();
    std::string msg = std::string(what) + ": master at " + address + " ";
    switch (s.error_code()) {
      case grpc::StatusCode::DEADLINE_EXCEEDED:
        // UNAVAILABLE, not DEADLINE_EXCEEDED: for store clients that code
        // means an expired read lease.
        return UnavailableError(msg + "did not answer within " +
                                     std::to_string(options.rpc_timeout.count()) + " ms");
      case grpc::StatusCode::UNAVAILABLE:
        return UnavailableError(msg + "unreachable (" + s.error_message() +
                                "); is `crescent master` running there?");
      default:
        return Status(static_cast<StatusCode>(s.error_code()),
                      msg + "failed: " + s.error_message());
    }
  }
};

std::unique_ptr<MasterClient> MasterClient::Create(std::string address,
                                                   const MasterClientOptions& options,
                                                   bool own_connection) {
  auto impl = std::make_unique<Impl>();
  impl->address = std::move(address);
  impl->options = options;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  args.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  // Reconnect quickly after a master restart. GRPC_ARG_MIN_RECONNECT_BACKOFF_MS
  // is left at its default on purpose: gRPC also uses it as the connect
  // timeout, and a small value fails handshakes on a loaded host.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  if (own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  impl->channel =
      grpc::CreateCustomChannel(impl->address, grpc::InsecureChannelCredentials(), args);
  impl->stub = rpc::Master::NewStub(impl->channel);
  return std::unique_ptr<MasterClient>(new MasterClient(std::move(impl)));
}

MasterClient::MasterClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MasterClient::~MasterClient() = default;
const std::string& MasterClient::address() const { return impl_->address; }

using Stub = rpc::Master::Stub;

StatusOr<std::vector<Replica>> MasterClient::PutStart(const PutStartArgs& args) {
  if (impl_->options.use_fast_port) {  // the batch form picks fast port or gRPC
    ASSIGN_OR_RETURN(auto r, BatchPutStart({args}));
    return std::move(r.at(0));
  }
  rpc::PutStartItem req;
  ToProto(args, &req);
  rpc::PutStartResult resp;
  RETURN_IF_ERROR(impl_->Call("PutStart", &Stub::PutStart, req, &resp));
  RETURN_IF_ERROR(FromProto(resp.error()));
  std::vector<Replica> out;
  for (const auto& r : resp.replicas()) out.push_back(FromProto(r));
  return out;
}

Status MasterClient::PutEnd(std::string_view key, uint32_t crc32c) {
  if (impl_->options.use_fast_port) {  // the batch form picks fast port or gRPC
    ASSIGN_OR_RETURN(auto r, BatchPutEnd({std::string(key)}, {crc32c}));
    return r.at(0);
  }
  rpc::PutEndItem req;
  req.set_key(std::string(key));
  req.set_crc32c(crc32c);
  rpc::Error resp;
  RETURN_IF_ERROR(impl_->Call("PutEnd", &Stub::PutEnd, req, &resp));
  return FromProto(resp);
}

Status MasterClient::PutRevoke(std::string_view key) {
  if (impl_->options.use_fast_port) {  // the batch form picks fast port or gRPC
    ASSIGN_OR_RETURN(auto r, BatchPutRevoke({std::string(key)}));
    return r.at(0);
  }
  rpc::KeyRequest req;
  req.set_key(std::string(key));
  rpc::Error resp;
  RETURN_IF_ERROR(impl_->Call("PutRevoke", &Stub::PutRevoke, req, &resp));
  return FromProto(resp);
}

StatusOr<ObjectInfo> MasterClient::GetReplicaList(std::string_view key) {
  if (impl_->options.use_fast_port) {  // the batch form picks fast port or gRPC
    ASSIGN_OR_RETURN(auto r, BatchGetReplicaList({std::string(key)}));
    return std::move(r.at(0));
  }
  rpc::KeyRequest req;
  req.set_key(std::string(key));
  rpc::ObjectReply resp;
  RETURN_IF_ERROR(impl_->Call("GetReplicaList", &Stub::GetReplicaList, req, &resp));
  return FromProto(resp);
}

StatusOr<bool> MasterClient::Exist(std::string_view key) {
  if (impl_->options.use_fast_port) {  // the batch form picks fast port or gRPC
    ASSIGN_OR_RETURN(auto r, BatchExist({std::string(key)}));
    return std::move(r.at(0));
  }
  rpc::KeyRequest req;
  req.set_key(std::string(key));
  rpc::ExistReply resp;
  RETURN_IF_ERROR(impl_->Call("Exist", &Stub::Exist, req, &resp));
  RETURN_IF_ERROR(FromProto(resp.error()));
  return resp.exists();
}

Status MasterClient::Remove(std::string_view key) {
  if (impl_->options.use_fast_port) {  // the batch form picks fast port or gRPC
    ASSIGN_OR_RETURN(auto r, BatchRemove({std::string(key)}));
    return r.at(0);
  }
  rpc::KeyRequest req;
  req.set_key(std::string(key));
  rpc::Error resp;
  RETURN_IF_ERROR(impl_->Call("Remove", &Stub::Remove, req, &resp));
  return FromProto(resp);
}

StatusOr<uint64_t> MasterClient::RemoveAll() {
  rpc::Empty req;
  rpc::RemoveAllReply resp;
  RETURN_IF_ERROR(impl_->Call("RemoveAll", &Stub::RemoveAll, req, &resp));
  return resp.removed();
}

namespace {
rpc::KeysRequest KeysOf(const std::vector<std::string>& keys) {
  rpc::KeysRequest req;
  req.mutable_keys()->Reserve(static_cast<int>(keys.size()));
  for (const auto& k : keys) req.add_keys(k);
  return req;
}

std::vector<Status> ErrorsOf(const rpc::BatchErrorReply& resp) {
  std::vector<Status> out;
  out.reserve(resp.errors_size());
  for (const auto& e : resp.errors()) out.push_back(FromProto(e));
  return out;
}
}  // namespace

StatusOr<std::vector<StatusOr<std::vector<Replica>>>> MasterClient::BatchPutStart(
    const std::vector<PutStartArgs>& items) {
  if (auto fast = impl_->Fast()) {
    bool reached = false;
    auto r = fast->BatchPutStart(items, &reached);
    if (impl_->Stands(r, reached, fast)) return r;
  }
  rpc::BatchPutStartRequest req;
  for (const auto& a : items) ToProto(a, req.add_items());
  rpc::BatchPutStartReply resp;
  RETURN_IF_ERROR(impl_->Call("BatchPutStart", &Stub::BatchPutStart, req, &resp));
  std::vector<StatusOr<std::vector<Replica>>> out;
  out.reserve(resp.results_size());
  for (const auto& r : resp.results()) {
    if (Status s = FromProto(r.error()); !s.ok()) {
      out.push_back(s);
      continue;
    }
    std::vector<Replica> reps;
    for (const auto& rep : r.replicas()) reps.push_back(FromProto(rep));
    out.push_back(std::move(reps));
  }
  return out;
}

StatusOr<std::vector<Status>> MasterClient::BatchPutEnd(const std::vector<std::string>& keys,
                                                        const std::vector<uint32_t>& crcs) {
  if (auto fast = impl_->Fast()) {
    bool reached = false;
    auto r = fast->BatchPutEnd(keys, crcs, &reached);
    if (impl_->Stands(r, reached, fast)) return r;
  }
  rpc::BatchPutEndRequest req;
  for (size_t i = 0; i < keys.size() && i < crcs.size(); ++i) {
    auto* item = req.add_items();
    item->set_key(keys[i]);
    item->set_crc32c(crcs[i]);
  }
  rpc::BatchErrorReply resp;
  RETURN_IF_ERROR(impl_->Call("BatchPutEnd", &Stub::BatchPutEnd, req, &resp));
  return ErrorsOf(resp);
}

StatusOr<std::vector<Status>> MasterClient::BatchPutRevoke(const std::vector<std::string>& keys) {
  if (auto fast = impl_->Fast()) {
    bool reached = false;
    auto r = fast->BatchPutRevoke(keys, &reached);
    if (impl_->Stands(r, reached, fast)) return r;
  }
  rpc::BatchErrorReply resp;
  RETURN_IF_ERROR(impl_->Call("BatchPutRevoke", &Stub::BatchPutRevoke, KeysOf(keys), &resp));
  return ErrorsOf(resp);
}

StatusOr<std::vector<StatusOr<ObjectInfo>>> MasterClient::BatchGetReplicaList(
    const std::vector<std::string>& keys) {
  if (auto fast = impl_->Fast()) {
    bool reached = false;
    auto r = fast->BatchGetReplicaList(keys, &reached);
    if (impl_->Stands(r, reached, fast)) return r;
  }
  rpc::BatchObjectReply resp;
  RETURN_IF_ERROR(
      impl_->Call("BatchGetReplicaList", &Stub::BatchGetReplicaList, KeysOf(keys), &resp));
  std::vector<StatusOr<ObjectInfo>> out;
  out.reserve(resp.objects_size());
  for (const auto& o : resp.objects()) out.push_back(FromProto(o));
  return out;
}

StatusOr<std::vector<StatusOr<bool>>> MasterClient::BatchExist(
    const std::vector<std::string>& keys) {
  if (auto fast = impl_->Fast()) {
    bool reached = false;
    auto r = fast->BatchExist(keys, &reached);
    if (impl_->Stands(r, reached, fast)) return r;
  }
  rpc::BatchExistReply resp;
  RETURN_IF_ERROR(impl_->Call("BatchExist", &Stub::BatchExist, KeysOf(keys), &resp));
  std::vector<StatusOr<bool>> out;
  out.reserve(resp.results_size());
  for (const auto& r : resp.results()) {
    Status s = FromProto(r.error());
    if (s.ok()) out.push_back(r.exists()); else out.push_back(s);
  }
  return out;
}

StatusOr<std::vector<Status>> MasterClient::BatchRemove(const std::vector<std::string>& keys) {
  if (auto fast = impl_->Fast()) {
    bool reached = false;
    auto r = fast->BatchRemove(keys, &reached);
    if (impl_->Stands(r, reached, fast)) return r;
  }
  rpc::BatchErrorReply resp;
  RETURN_IF_ERROR(impl_->Call("BatchRemove", &Stub::BatchRemove, KeysOf(keys), &resp));
  return ErrorsOf(resp);
}

StatusOr<uint64_t> MasterClient::MountSegment(std::string_view client_id, const SegmentSpec& spec,
                                              const std::vector<SegmentObject>& objects) {
  rpc::MountRequest req;
  req.set_client_id(std::string(client_id));
  req.mutable_segment()->set_name(spec.name);
  req.mutable_segment()->set_base(spec.base);
  req.mutable_segment()->set_size(spec.size);
  for (const auto& o : objects) ToProto(o, req.add_objects());
  rpc::MountReply resp;
  RETURN_IF_ERROR(impl_->Call("MountSegment", &Stub::MountSegment, req, &resp));
  RETURN_IF_ERROR(FromProto(resp.error()));
  return resp.registered();
}

Status MasterClient::UnmountSegment(std::string_view client_id, std::string_view name,
                                    uint64_t base) {
  rpc::UnmountRequest req;
  req.set_client_id(std::string(client_id));
  req.set_name(std::string(name));
  req.set_base(base);
  rpc::Error resp;
  RETURN_IF_ERROR(impl_->Call("UnmountSegment", &Stub::UnmountSegment, req, &resp));
  return FromProto(resp);
}

StatusOr<PingReply> MasterClient::Ping(std::string_view client_id) {
  rpc::PingRequest req;
  req.set_client_id(std::string(client_id));
  rpc::PingReply resp;
  RETURN_IF_ERROR(impl_->Call("Ping", &Stub::Ping, req, &resp));
  PingReply out;
  out.master_id = resp.master_id();
  out.client_ttl_ms = resp.client_ttl_ms();
  out.result.known = resp.known();
  out.result.snapshot = resp.snapshot();
  out.result.events.reserve(resp.events_size());
  for (const auto& e : resp.events()) {
    out.result.events.push_back({e.added(), FromProto(e.object(), e.segment(), e.base())});
  }
  return out;
}

StatusOr<MasterHealth> MasterClient::Health() {
  rpc::Empty req;
  rpc::HealthReply resp;
  RETURN_IF_ERROR(impl_->Call("Health", &Stub::Health, req, &resp));
  MasterHealth h;
  h.master_id = resp.master_id();
  h.cluster_id = resp.cluster_id();
  h.stats.keys = resp.keys();
  h.stats.allocated_bytes = resp.allocated_bytes();
  h.stats.total_bytes = resp.total_bytes();
  h.stats.segments = resp.segments();
  h.stats.clients = resp.clients();
  h.fast_port = static_cast<uint16_t>(resp.fast_port());
  h.fast_unix = resp.fast_unix();
  return h;
}

StatusOr<Reservation> MasterClient::Reserve(std::string_view client_id, uint64_t size,
                                            uint64_t min_size,
                                            std::string_view preferred_segment) {
  auto fast = impl_->Fast();
  if (!fast) {
    return UnimplementedError("reservations need the master's fast port, which is off or "
                              "unreachable; put with PutStart/PutEnd");
  }
  bool reached = false;
  auto r = fast->Reserve(std::string(client_id), size, min_size, std::string(preferred_segment),
                         &reached);
  impl_->Stands(r, reached, fast);
  return r;
}

StatusOr<std::vector<Status>> MasterClient::BatchCommit(const std::vector<CommitArgs>& items) {
  auto fast = impl_->Fast();
  if (!fast) {
    return UnavailableError("the master's fast port became unreachable; its reservations are "
                            "unknown to gRPC");
  }
  bool reached = false;
  auto r = fast->BatchCommit(items, &reached);
  impl_->Stands(r, reached, fast);
  return r;
}

Status MasterClient::Release(uint64_t reservation) {
  auto fast = impl_->Fast();
  if (!fast) return UnavailableError("the master's fast port is unreachable");
  bool reached = false;
  Status s = fast->Release(reservation, &reached);
  impl_->Stands(StatusOr<bool>(s.ok() ? StatusOr<bool>(true) : StatusOr<bool>(s)), reached, fast);
  return s;
}

bool MasterClient::using_fast_port() const {
  std::lock_guard lock(impl_->fast_mu);
  return impl_->fast != nullptr;
}

StatusOr<ObjectInfo> MasterClient::QueryKey(std::string_view key) {
  rpc::KeyRequest req;
  req.set_key(std::string(key));
  rpc::ObjectReply resp;
  RETURN_IF_ERROR(impl_->Call("QueryKey", &Stub::QueryKey, req, &resp));
  return FromProto(resp);
}

StatusOr<std::vector<SegmentInfo>> MasterClient::ListSegments() {
  rpc::Empty req;
  rpc::ListSegmentsReply resp;
  RETURN_IF_ERROR(impl_->Call("ListSegments", &Stub::ListSegments, req, &resp));
  std::vector<SegmentInfo> out;
  for (const auto& s : resp.segments()) {
    out.push_back({SegmentSpec{s.segment().name(), s.segment().base(), s.segment().size()},
                   s.owner(), s.allocated(), s.largest_free(), s.free_blocks()});
  }
  return out;
}

StatusOr<std::vector<std::string>> MasterClient::ListKeys(std::string_view prefix,
                                                          uint32_t limit) {
  rpc::ListKeysRequest req;
  req.set_prefix(std::string(prefix));
  req.set_limit(limit);
  rpc::ListKeysReply resp;
  RETURN_IF_ERROR(impl_->Call("ListKeys", &Stub::ListKeys, req, &resp));
  return std::vector<std::string>(resp.keys().begin(), resp.keys().end());
}

}  // namespace crescent::store
