// The master's lean binary protocol ("fast port"): the hot RPCs without
// gRPC's per-call cost. Internal to src/store; docs/store.md describes it.
//
// Why: on a loaded 2-core host one unary gRPC call costs ~100-150 us of CPU
// and latency, while a request/response over a plain loopback socket costs
// ~30 us. Redis answers a SET in one such round trip; a store put needs the
// same to keep up (see MasterCore::Reserve for the one-round-trip put).
//
// Framing, all integers little-endian:
//   request:  u32 body_len | u32 call_id | u8 method | body
//   reply:    u32 body_len | u32 call_id | u8 method | u8 code [| str message] | body
// A reply whose code is not 0 carries the message and no body: the call as
// a whole failed (malformed request, unknown method). Per-item outcomes of
// batch methods are statuses inside the body. A connection carries one call
// at a time from the client's side; the server answers in order.
//
// Strings are u32 length + bytes. A status is u8 code [+ str message when
// code != 0]. Bodies per method:
//   kPutStart  n, n x (str key, u64 size, u32 replica_num, u8 soft_pin, str preferred)
//              -> n x (status [, u32 m, m x (str segment, u64 address)])
//   kPutEnd    n, n x (str key, u32 crc32c)          -> n x status
//   kPutRevoke / kRemove  n, n x str key             -> n x status
//   kGetReplicaList n, n x str key
//              -> n x (status [, u64 size, u32 crc, u8 soft_pin, i64 lease_ms,
//                               u32 m, m x (str segment, u64 address)])
//   kExist     n, n x str key                        -> n x (status [, u8 exists])
//   kReserve   str client_id, u64 size, u64 min_size, str preferred
//              -> status [, u64 id, str segment, u64 address, u64 size, i64 ttl_ms]
//   kCommit    n, n x (u64 reservation, str key, u64 address, u64 size, u32 crc, u8 soft_pin)
//              -> n x status
//   kRelease   u64 reservation                       -> status
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "store/master.h"

namespace crescent::store::wire {

inline constexpr size_t kHeaderBytes = 9;
// Larger bodies are refused (a batch of 512 maximal keys is ~2 MiB).
inline constexpr uint32_t kMaxBodyBytes = 64u << 20;

enum Method : uint8_t {
  kPutStart = 1,
  kPutEnd = 2,
  kPutRevoke = 3,
  kGetReplicaList = 4,
  kExist = 5,
  kRemove = 6,
  kReserve = 7,
  kCommit = 8,
  kRelease = 9,
};

// Appends to a string.
class Writer {
 public:
  explicit Writer(std::string* out) : out_(out) {}
  void U8(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void I64(int64_t v) { Raw(&v, 8); }
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    out_->append(s.data(), s.size());
  }
  void Status(const crescent::Status& s) {
    U8(static_cast<uint8_t>(s.code()));
    if (!s.ok()) Str(s.message());
  }
  void Replicas(const std::vector<Replica>& reps) {
    U32(static_cast<uint32_t>(reps.size()));
    for (const auto& r : reps) {
      Str(r.segment);
      U64(r.address);
    }
  }

 private:
  void Raw(const void* p, size_t n) { out_->append(static_cast<const char*>(p), n); }
  std::string* out_;
};

// Reads from a byte range; every accessor returns false past the end, and
// stays false (so a decoder checks once, at the end).
class Reader {
 public:
  Reader(const char* data, size_t size) : p_(data), end_(data + size) {}
  explicit Reader(std::string_view s) : Reader(s.data(), s.size()) {}
  bool ok() const { return ok_; }
  bool done() const { return ok_ && p_ == end_; }
  uint8_t U8() {
    uint8_t v = 0;
    Raw(&v, 1);
    return v;
  }
  uint32_t U32() {
    uint32_t v = 0;
    Raw(&v, 4);
    return v;
  }
  uint64_t U64() {
    uint64_t v = 0;
    Raw(&v, 8);
    return v;
  }
  int64_t I64() {
    int64_t v = 0;
    Raw(&v, 8);
    return v;
  }
  std::string Str() {
    const uint32_t n = U32();
    if (!ok_ || static_cast<size_t>(end_ - p_) < n) {
      ok_ = false;
      return {};
    }
    std::string s(p_, n);
    p_ += n;
    return s;
  }
  crescent::Status Status() {
    const uint8_t code = U8();
    if (code == 0 || !ok_) return OkStatus();
    if (code > static_cast<uint8_t>(StatusCode::kDataLoss)) ok_ = false;
    std::string msg = Str();
    return crescent::Status(static_cast<StatusCode>(code), std::move(msg));
  }
  std::vector<Replica> Replicas() {
    const uint32_t n = Count(12);
    std::vector<Replica> reps(n);
    for (auto& r : reps) {
      r.segment = Str();
      r.address = U64();
    }
    return reps;
  }
  // An item count, refused when the rest could not hold n items of at
  // least `min_item_bytes` each (no huge allocation from a bad frame).
  uint32_t Count(size_t min_item_bytes) {
    const uint32_t n = U32();
    if (!ok_ || n > static_cast<size_t>(end_ - p_) / min_item_bytes) {
      ok_ = false;
      return 0;
    }
    return n;
  }

 private:
  void Raw(void* v, size_t n) {
    if (!ok_ || static_cast<size_t>(end_ - p_) < n) {
      ok_ = false;
      return;
    }
    std::memcpy(v, p_, n);
    p_ += n;
  }
  const char* p_;
  const char* end_;
  bool ok_ = true;
};

// Header helpers.
inline void AppendHeader(std::string* out, uint32_t body_len, uint32_t call_id, uint8_t method) {
  Writer w(out);
  w.U32(body_len);
  w.U32(call_id);
  w.U8(method);
}
struct Header {
  uint32_t body_len = 0;
  uint32_t call_id = 0;
  uint8_t method = 0;
};
inline Header ParseHeader(const char* p) {
  Header h;
  std::memcpy(&h.body_len, p, 4);
  std::memcpy(&h.call_id, p + 4, 4);
  h.method = static_cast<uint8_t>(p[8]);
  return h;
}

}  // namespace crescent::store::wire
