// Conversions between MasterCore's structs and proto/master.proto, shared
// by the server and the client so that both read the wire the same way.
// Internal to src/store (includes generated protobuf headers).
#pragma once

#include "common/status.h"
#include "store/master.h"
#include "store/proto/master.pb.h"

namespace crescent::store {

inline void ToProto(const Status& s, rpc::Error* e) {
  if (s.ok()) return;
  e->set_code(static_cast<int>(s.code()));
  e->set_message(s.message());
}

inline Status FromProto(const rpc::Error& e) {
  if (e.code() == 0) return OkStatus();
  if (e.code() < 0 || e.code() > static_cast<int>(StatusCode::kDataLoss)) {
    return Status(StatusCode::kUnknown, e.message());
  }
  return Status(static_cast<StatusCode>(e.code()), e.message());
}

inline void ToProto(const Replica& r, rpc::Replica* p) {
  p->set_segment(r.segment);
  p->set_address(r.address);
}

inline Replica FromProto(const rpc::Replica& p) { return Replica{p.segment(), p.address()}; }

inline void ToProto(const PutStartArgs& a, rpc::PutStartItem* p) {
  p->set_key(a.key);
  p->set_size(a.size);
  p->set_replica_num(a.replica_num);
  p->set_soft_pin(a.soft_pin);
  p->set_preferred_segment(a.preferred_segment);
}

inline PutStartArgs FromProto(const rpc::PutStartItem& p) {
  return PutStartArgs{p.key(), p.size(), p.replica_num(), p.soft_pin(), p.preferred_segment()};
}

inline void ToProto(const StatusOr<ObjectInfo>& info, rpc::ObjectReply* p) {
  if (!info.ok()) {
    ToProto(info.status(), p->mutable_error());
    return;
  }
  p->set_size(info->size);
  p->set_crc32c(info->crc32c);
  p->set_soft_pin(info->soft_pin);
  p->set_complete(info->complete);
  p->set_lease_ms(info->lease_ms);
  for (const auto& r : info->replicas) ToProto(r, p->add_replicas());
}

inline StatusOr<ObjectInfo> FromProto(const rpc::ObjectReply& p) {
  if (p.has_error() && p.error().code() != 0) return FromProto(p.error());
  ObjectInfo info;
  info.size = p.size();
  info.crc32c = p.crc32c();
  info.soft_pin = p.soft_pin();
  info.complete = p.complete();
  info.lease_ms = p.lease_ms();
  info.replicas.reserve(p.replicas_size());
  for (const auto& r : p.replicas()) info.replicas.push_back(FromProto(r));
  return info;
}

inline void ToProto(const SegmentObject& o, rpc::HeldObject* p) {
  p->set_key(o.key);
  p->set_offset(o.offset);
  p->set_size(o.size);
  p->set_crc32c(o.crc32c);
  p->set_soft_pin(o.soft_pin);
}

inline SegmentObject FromProto(const rpc::HeldObject& p, const std::string& segment,
                               uint64_t base) {
  return SegmentObject{segment, base, p.key(), p.offset(), p.size(), p.crc32c(), p.soft_pin()};
}

}  // namespace crescent::store
