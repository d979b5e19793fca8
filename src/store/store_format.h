// The store's formats and limits, as constants. docs/store.md is the same
// specification in prose; change both together.
#pragma once

#include <cstddef>
#include <cstdint>

namespace crescent::store {

// ---- Keys -------------------------------------------------------------
// A key is 1..kMaxKeyLength bytes, any bytes except NUL. Keys are opaque to
// the store; the KV connector's key schema (lineage + chained token hash) is
// documented in docs/kvconnector.md.
inline constexpr size_t kMaxKeyLength = 4096;

// ---- Objects ----------------------------------------------------------
// An object's value is stored as its raw bytes, contiguous, at each
// replica's address inside a mounted segment; nothing else is written into
// a segment. Its CRC-32C (common/crc32c.h) is kept in the master's index,
// handed to readers with the replica list, and checked by every read.
inline constexpr uint64_t kMinValueSize = 1;
// Every allocation inside a segment starts at a multiple of this many bytes
// (a cache line: no two objects share one, so concurrent writers never
// false-share) and is rounded up to it.
inline constexpr uint64_t kAllocAlignment = 64;
// Upper bound on replicas of one object (each on a distinct segment).
inline constexpr uint32_t kMaxReplicaNum = 8;

// ---- Master -----------------------------------------------------------
inline constexpr uint16_t kDefaultMasterPort = 50051;
inline constexpr uint16_t kDefaultMetricsPort = 9003;
inline constexpr uint16_t kDefaultHttpMetadataPort = 8080;
// gRPC messages may carry a whole segment's object list when a client
// re-registers after a master restart.
inline constexpr int kMaxGrpcMessageBytes = 512 << 20;

}  // namespace crescent::store
