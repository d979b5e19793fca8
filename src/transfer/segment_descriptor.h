// The segment descriptor: what a peer needs to reach a segment, stored as
// JSON in the metadata service (format: transfer_format.h, docs/transfer.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace crescent::transfer {

struct BufferDescriptor {
  uint32_t id = 0;          // never reused within one engine instance
  uint64_t offset = 0;      // segment offset
  uint64_t length = 0;      // bytes
  bool shm = false;         // memfd-backed: mappable by same-host peers
};

struct SegmentDescriptor {
  std::string name;
  uint64_t instance = 0;    // random per engine start
  std::string host_id;      // HostId() of the publisher
  std::string host;         // tcp address
  uint16_t tcp_port = 0;
  std::string shm_socket;   // abstract unix socket name (without the leading NUL)
  int64_t pid = 0;
  std::vector<BufferDescriptor> buffers;  // sorted by offset

  // The buffer containing [offset, offset + length), or null.
  const BufferDescriptor* Find(uint64_t offset, uint64_t length) const;
  // "[0, 64 MiB) [64 MiB, 65 MiB)" for error messages.
  std::string DescribeBuffers() const;
};

std::string EncodeSegmentDescriptor(const SegmentDescriptor& desc);
// Untrusted input: every field is checked; errors name the field.
StatusOr<SegmentDescriptor> DecodeSegmentDescriptor(std::string_view json);

// Identifies this machine (boot id + hostname): equal ids mean two processes
// can share memory.
const std::string& HostId();

}  // namespace crescent::transfer
