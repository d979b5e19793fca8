// Wire formats of the transfer engine, as constants. The prose version of
// this file is docs/transfer.md; change both together.
//
// All integers on the wire are little-endian (both ends are x86-64/aarch64;
// the structs below are memcpy'd, static_asserts pin their layout).
#pragma once

#include <cstdint>
#include <string_view>

namespace crescent::transfer::format {

// ---- segment descriptor (JSON value in the metadata service) ----
// Key: "<cluster_id>/segments/<segment name>" (metadata/metadata_keys.h).
inline constexpr int kDescriptorVersion = 1;
// Field names of the descriptor object.
inline constexpr std::string_view kFieldVersion = "version";     // int, kDescriptorVersion
inline constexpr std::string_view kFieldName = "name";           // segment name
inline constexpr std::string_view kFieldInstance = "instance";   // u64 as 16 hex digits
inline constexpr std::string_view kFieldHostId = "host_id";      // boot_id/hostname
inline constexpr std::string_view kFieldHost = "host";           // tcp address
inline constexpr std::string_view kFieldTcpPort = "tcp_port";    // int
inline constexpr std::string_view kFieldShmSocket = "shm_socket";// abstract unix name, "" = none
inline constexpr std::string_view kFieldPid = "pid";             // informational
inline constexpr std::string_view kFieldBuffers = "buffers";     // array of buffer objects
inline constexpr std::string_view kFieldBufId = "id";            // u32, never reused
inline constexpr std::string_view kFieldBufOffset = "offset";    // segment offset
inline constexpr std::string_view kFieldBufLength = "length";    // bytes
inline constexpr std::string_view kFieldBufShm = "shm";          // bool: memfd-backed

// Segment offsets of successive regions are aligned to this.
inline constexpr uint64_t kSegmentOffsetAlignment = 4096;

// ---- tcp data protocol ----
// The initiator sends RequestHeader; for kOpWrite `length` payload bytes
// follow. The target answers ResponseHeader; for a successful kOpRead
// `length` payload bytes follow; on error `length` bytes of UTF-8 error text
// follow instead (and a write's payload has been consumed and discarded).
// Requests on one connection are answered in order; an initiator may send
// several before reading answers (pipelining).
inline constexpr uint32_t kRequestMagic = 0x58545243;   // "CRTX"
inline constexpr uint32_t kResponseMagic = 0x52545243;  // "CRTR"
inline constexpr uint8_t kProtocolVersion = 1;
inline constexpr uint8_t kOpRead = 1;
inline constexpr uint8_t kOpWrite = 2;
// RequestHeader.flags: another request header follows this request (after
// its payload) in the same burst, so the target may receive both at once.
inline constexpr uint16_t kFlagMore = 1;
// Longest error text a target sends.
inline constexpr uint64_t kMaxErrorText = 4096;

struct RequestHeader {
  uint32_t magic;      // kRequestMagic
  uint8_t version;     // kProtocolVersion
  uint8_t opcode;      // kOpRead | kOpWrite
  uint16_t flags;      // kFlagMore or 0
  uint64_t request_id; // echoed in the response
  uint64_t instance;   // target engine instance from the descriptor: a
                       // stale descriptor never reaches a newer process
  uint64_t offset;     // segment offset
  uint64_t length;     // bytes
};
static_assert(sizeof(RequestHeader) == 40);

struct ResponseHeader {
  uint32_t magic;      // kResponseMagic
  uint16_t code;       // crescent::StatusCode; 0 = OK
  uint16_t reserved;   // 0
  uint64_t request_id; // from the request
  uint64_t length;     // payload (read data or error text) bytes that follow
};
static_assert(sizeof(ResponseHeader) == 24);

// ---- shared-memory control protocol (abstract unix socket) ----
// The target listens on the abstract unix socket named in the descriptor.
// A peer connects and sends ShmHello; the target replies ShmReply carrying,
// as SCM_RIGHTS, the fd of the control page (kShmMaxBuffers u32 states, one
// per buffer id). The peer then asks for buffers with ShmMapRequest; each
// reply carries that buffer's memfd. The connection stays open: its hang-up
// tells the peer the target died (checked after every copy), and a buffer
// whose control state is not kShmBufferLive is refused.
inline constexpr uint32_t kShmHelloMagic = 0x4f4c4548;  // "HELO"
inline constexpr uint32_t kShmMapMagic = 0x5050414d;    // "MAPP"
inline constexpr uint32_t kShmReplyMagic = 0x594c5052;  // "RPLY"
inline constexpr uint32_t kShmMaxBuffers = 8192;        // buffer ids per engine lifetime
inline constexpr uint32_t kShmBufferUnused = 0;
inline constexpr uint32_t kShmBufferLive = 1;
inline constexpr uint32_t kShmBufferRevoked = 2;

struct ShmHello {
  uint32_t magic;     // kShmHelloMagic
  uint32_t reserved;
  uint64_t instance;  // target instance the peer expects
};
static_assert(sizeof(ShmHello) == 16);

struct ShmMapRequest {
  uint32_t magic;      // kShmMapMagic
  uint32_t buffer_id;
};
static_assert(sizeof(ShmMapRequest) == 8);

struct ShmReply {
  uint32_t magic;      // kShmReplyMagic
  uint16_t code;       // StatusCode; 0 = OK and one fd attached
  uint16_t reserved;
  uint64_t length;     // bytes of the mapped object
};
static_assert(sizeof(ShmReply) == 16);

}  // namespace crescent::transfer::format
