#include "store/master_service.h"

#include <grpcpp/grpcpp.h>

#include "store/proto_convert.h"

namespace crescent::store {
namespace {

using grpc::CallbackServerContext;
using grpc::ServerUnaryReactor;

const char* const kRpcNames[] = {
    "PutStart", "PutEnd", "PutRevoke", "GetReplicaList", "Exist", "Remove", "RemoveAll",
    "BatchPutStart", "BatchPutEnd", "BatchPutRevoke", "BatchGetReplicaList", "BatchExist",
    "BatchRemove", "MountSegment", "UnmountSegment", "Ping", "Health", "QueryKey",
    "ListSegments", "ListKeys", "Reserve", "Commit", "Release"};
static_assert(sizeof(kRpcNames) / sizeof(kRpcNames[0]) == static_cast<int>(MasterRpc::kCount));

class MasterServiceImpl final : public rpc::Master::CallbackService {
 public:
  MasterServiceImpl(MasterCore* core, RpcCounters* counters, std::string master_id,
                    std::string cluster_id, int64_t client_ttl_ms, uint16_t fast_port,
                    std::string fast_unix)
      : core_(core), counters_(counters), master_id_(std::move(master_id)),
        cluster_id_(std::move(cluster_id)), client_ttl_ms_(client_ttl_ms),
        fast_port_(fast_port), fast_unix_(std::move(fast_unix)) {}

  ServerUnaryReactor* PutStart(CallbackServerContext* ctx, const rpc::PutStartItem* req,
                               rpc::PutStartResult* resp) override {
    auto r = core_->PutStart(FromProto(*req));
    if (r.ok()) {
      for (const auto& rep : *r) ToProto(rep, resp->add_replicas());
    } else {
      ToProto(r.status(), resp->mutable_error());
    }
    return Done(ctx, MasterRpc::kPutStart, r.ok());
  }

  ServerUnaryReactor* PutEnd(CallbackServerContext* ctx, const rpc::PutEndItem* req,
                             rpc::Error* resp) override {
    Status s = core_->PutEnd(req->key(), req->crc32c());
    ToProto(s, resp);
    return Done(ctx, MasterRpc::kPutEnd, s.ok());
  }

  ServerUnaryReactor* PutRevoke(CallbackServerContext* ctx, const rpc::KeyRequest* req,
                                rpc::Error* resp) override {
    Status s = core_->PutRevoke(req->key());
    ToProto(s, resp);
    return Done(ctx, MasterRpc::kPutRevoke, s.ok());
  }

  ServerUnaryReactor* GetReplicaList(CallbackServerContext* ctx, const rpc::KeyRequest* req,
                                     rpc::ObjectReply* resp) override {
    auto r = core_->GetReplicaList(req->key());
    ToProto(r, resp);
    return Done(ctx, MasterRpc::kGetReplicaList, r.ok());
  }

  ServerUnaryReactor* Exist(CallbackServerContext* ctx, const rpc::KeyRequest* req,
                            rpc::ExistReply* resp) override {
    auto r = core_->Exist(req->key());
    if (r.ok()) resp->set_exists(*r); else ToProto(r.status(), resp->mutable_error());
    return Done(ctx, MasterRpc::kExist, r.ok());
  }

  ServerUnaryReactor* Remove(CallbackServerContext* ctx, const rpc::KeyRequest* req,
                             rpc::Error* resp) override {
    Status s = core_->Remove(req->key());
    ToProto(s, resp);
    return Done(ctx, MasterRpc::kRemove, s.ok());
  }

  ServerUnaryReactor* RemoveAll(CallbackServerContext* ctx, const rpc::Empty*,
                                rpc::RemoveAllReply* resp) override {
    resp->set_removed(core_->RemoveAll());
    return Done(ctx, MasterRpc::kRemoveAll, true);
  }

  ServerUnaryReactor* BatchPutStart(CallbackServerContext* ctx,
                                    const rpc::BatchPutStartRequest* req,
                                    rpc::BatchPutStartReply* resp) override {
    std::vector<PutStartArgs> items;
    items.reserve(req->items_size());
    for (const auto& it : req->items()) items.push_back(FromProto(it));
    bool all_ok = true;
    for (auto& r : core_->BatchPutStart(items)) {
      auto* out = resp->add_results();
      if (r.ok()) {
        for (const auto& rep : *r) ToProto(rep, out->add_replicas());
      } else {
        ToProto(r.status(), out->mutable_error());
        all_ok = false;
      }
    }
    return Done(ctx, MasterRpc::kBatchPutStart, all_ok, items.size());
  }

  ServerUnaryReactor* BatchPutEnd(CallbackServerContext* ctx, const rpc::BatchPutEndRequest* req,
                                  rpc::BatchErrorReply* resp) override {
    std::vector<std::string> keys;
    std::vector<uint32_t> crcs;
    keys.reserve(req->items_size());
    crcs.reserve(req->items_size());
    for (const auto& it : req->items()) {
      keys.push_back(it.key());
      crcs.push_back(it.crc32c());
    }
    return Errors(ctx, MasterRpc::kBatchPutEnd, core_->BatchPutEnd(keys, crcs), resp);
  }

  ServerUnaryReactor* BatchPutRevoke(CallbackServerContext* ctx, const rpc::KeysRequest* req,
                                     rpc::BatchErrorReply* resp) override {
    return Errors(ctx, MasterRpc::kBatchPutRevoke, core_->BatchPutRevoke(Keys(*req)), resp);
  }

  ServerUnaryReactor* BatchGetReplicaList(CallbackServerContext* ctx, const rpc::KeysRequest* req,
                                          rpc::BatchObjectReply* resp) override {
    bool all_ok = true;
    auto results = core_->BatchGetReplicaList(Keys(*req));
    for (const auto& r : results) {
      ToProto(r, resp->add_objects());
      all_ok &= r.ok();
    }
    return Done(ctx, MasterRpc::kBatchGetReplicaList, all_ok, results.size());
  }

  ServerUnaryReactor* BatchExist(CallbackServerContext* ctx, const rpc::KeysRequest* req,
                                 rpc::BatchExistReply* resp) override {
    bool all_ok = true;
    auto results = core_->BatchExist(Keys(*req));
    for (const auto& r : results) {
      auto* out = resp->add_results();
      if (r.ok()) out->set_exists(*r); else ToProto(r.status(), out->mutable_error());
      all_ok &= r.ok();
    }
    return Done(ctx, MasterRpc::kBatchExist, all_ok, results.size());
  }

  ServerUnaryReactor* BatchRemove(CallbackServerContext* ctx, const rpc::KeysRequest* req,
                                  rpc::BatchErrorReply* resp) override {
    return Errors(ctx, MasterRpc::kBatchRemove, core_->BatchRemove(Keys(*req)), resp);
  }

  ServerUnaryReactor* MountSegment(CallbackServerContext* ctx, const rpc::MountRequest* req,
                                   rpc::MountReply* resp) override {
    const auto& seg = req->segment();
    std::vector<SegmentObject> objects;
    objects.reserve(req->objects_size());
    for (const auto& o : req->objects()) objects.push_back(FromProto(o, seg.name(), seg.base()));
    auto r = core_->MountSegment(req->client_id(), SegmentSpec{seg.name(), seg.base(), seg.size()},
                                 objects);
    if (r.ok()) resp->set_registered(*r); else ToProto(r.status(), resp->mutable_error());
    return Done(ctx, MasterRpc::kMountSegment, r.ok());
  }

  ServerUnaryReactor* UnmountSegment(CallbackServerContext* ctx, const rpc::UnmountRequest* req,
                                     rpc::Error* resp) override {
    Status s = core_->UnmountSegment(req->client_id(), req->name(), req->base());
    ToProto(s, resp);
    return Done(ctx, MasterRpc::kUnmountSegment, s.ok());
  }

  ServerUnaryReactor* Ping(CallbackServerContext* ctx, const rpc::PingRequest* req,
                           rpc::PingReply* resp) override {
    PingResult r = core_->Ping(req->client_id());
    resp->set_master_id(master_id_);
    resp->set_known(r.known);
    resp->set_snapshot(r.snapshot);
    resp->set_client_ttl_ms(client_ttl_ms_);
    for (const auto& e : r.events) {
      auto* out = resp->add_events();
      out->set_added(e.added);
      out->set_segment(e.object.segment);
      out->set_base(e.object.base);
      ToProto(e.object, out->mutable_object());
    }
    return Done(ctx, MasterRpc::kPing, true);
  }

  ServerUnaryReactor* Health(CallbackServerContext* ctx, const rpc::Empty*,
                             rpc::HealthReply* resp) override {
    MasterStats s = core_->Stats();
    resp->set_serving(true);
    resp->set_master_id(master_id_);
    resp->set_cluster_id(cluster_id_);
    resp->set_keys(s.keys);
    resp->set_allocated_bytes(s.allocated_bytes);
    resp->set_total_bytes(s.total_bytes);
    resp->set_segments(s.segments);
    resp->set_clients(s.clients);
    resp->set_fast_port(fast_port_);
    resp->set_fast_unix(fast_unix_);
    return Done(ctx, MasterRpc::kHealth, true);
  }

  ServerUnaryReactor* QueryKey(CallbackServerContext* ctx, const rpc::KeyRequest* req,
                               rpc::ObjectReply* resp) override {
    auto r = core_->QueryKey(req->key());
    ToProto(r, resp);
    return Done(ctx, MasterRpc::kQueryKey, r.ok());
  }

  ServerUnaryReactor* ListSegments(CallbackServerContext* ctx, const rpc::Empty*,
                                   rpc::ListSegmentsReply* resp) override {
    for (const auto& s : core_->ListSegments()) {
      auto* out = resp->add_segments();
      out->mutable_segment()->set_name(s.spec.name);
      out->mutable_segment()->set_base(s.spec.base);
      out->mutable_segment()->set_size(s.spec.size);
      out->set_owner(s.owner);
      out->set_allocated(s.allocated);
      out->set_largest_free(s.largest_free);
      out->set_free_blocks(s.free_blocks);
    }
    return Done(ctx, MasterRpc::kListSegments, true);
  }

  ServerUnaryReactor* ListKeys(CallbackServerContext* ctx, const rpc::ListKeysRequest* req,
                               rpc::ListKeysReply* resp) override {
    const size_t limit = req->limit() == 0 ? 1000 : req->limit();
    for (auto& k : core_->ListKeys(req->prefix(), limit)) resp->add_keys(std::move(k));
    return Done(ctx, MasterRpc::kListKeys, true);
  }

 private:
  static std::vector<std::string> Keys(const rpc::KeysRequest& req) {
    return std::vector<std::string>(req.keys().begin(), req.keys().end());
  }

  ServerUnaryReactor* Errors(CallbackServerContext* ctx, MasterRpc which,
                             const std::vector<Status>& results, rpc::BatchErrorReply* resp) {
    bool all_ok = true;
    for (const auto& s : results) {
      ToProto(s, resp->add_errors());
      all_ok &= s.ok();
    }
    return Done(ctx, which, all_ok, results.size());
  }

  ServerUnaryReactor* Done(CallbackServerContext* ctx, MasterRpc which, bool ok,
                           size_t items = 1) {
    const int i = static_cast<int>(which);
    counters_->requests[i].fetch_add(1, std::memory_order_relaxed);
    counters_->items[i].fetch_add(items, std::memory_order_relaxed);
    if (!ok) counters_->failures[i].fetch_add(1, std::memory_order_relaxed);
    ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  MasterCore* const core_;
  RpcCounters* const counters_;
  const std::string master_id_;
  const std::string cluster_id_;
  const int64_t client_ttl_ms_;
  const uint16_t fast_port_;
  const std::string fast_unix_;
};

}  // namespace

const char* MasterRpcName(MasterRpc rpc) { return kRpcNames[static_cast<int>(rpc)]; }

std::unique_ptr<rpc::Master::CallbackService> NewMasterService(MasterCore* core,
                                                                RpcCounters* counters,
                                                                std::string master_id,
                                                                std::string cluster_id,
                                                                int64_t client_ttl_ms,
                                                                uint16_t fast_port,
                                                                std::string fast_unix) {
  return std::make_unique<MasterServiceImpl>(core, counters, std::move(master_id),
                                             std::move(cluster_id), client_ttl_ms, fast_port,
                                             std::move(fast_unix));
}

}  // namespace crescent::store
