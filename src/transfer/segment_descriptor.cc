#include "transfer/segment_descriptor.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/size.h"
#include "fmt/format.h"
#include "transfer/transfer_format.h"

namespace crescent::transfer {

namespace f = format;
using nlohmann::json;

const BufferDescriptor* SegmentDescriptor::Find(uint64_t offset, uint64_t length) const {
  auto it = std::upper_bound(buffers.begin(), buffers.end(), offset,
                             [](uint64_t o, const BufferDescriptor& b) { return o < b.offset; });
  if (it == buffers.begin()) return nullptr;
  --it;
  if (offset - it->offset > it->length || length > it->length - (offset - it->offset))
    return nullptr;
  return &*it;
}

std::string SegmentDescriptor::DescribeBuffers() const {
  if (buffers.empty()) return "none registered";
  std::string out;
  for (size_t i = 0; i < buffers.size() && i < 8; ++i) {
    if (i) out += ' ';
    out += fmt::format("[{}, {})", buffers[i].offset, buffers[i].offset + buffers[i].length);
  }
  if (buffers.size() > 8) out += fmt::format(" ... ({} buffers)", buffers.size());
  return out;
}

std::string EncodeSegmentDescriptor(const SegmentDescriptor& d) {
  json bufs = json::array();
  for (const auto& b : d.buffers)
    bufs.push_back({{f::kFieldBufId, b.id},
                    {f::kFieldBufOffset, b.offset},
                    {f::kFieldBufLength, b.length},
                    {f::kFieldBufShm, b.shm}});
  json j = {{f::kFieldVersion, f::kDescriptorVersion},
            {f::kFieldName, d.name},
            {f::kFieldInstance, fmt::format("{:016x}", d.instance)},
            {f::kFieldHostId, d.host_id},
            {f::kFieldHost, d.host},
            {f::kFieldTcpPort, d.tcp_port},
            {f::kFieldShmSocket, d.shm_socket},
            {f::kFieldPid, d.pid},
            {f::kFieldBuffers, std::move(bufs)}};
  return j.dump();
}

namespace {

template <typename T>
Status Field(const json& obj, std::string_view name, T* out, std::string_view where) {
  auto it = obj.find(name);
  if (it == obj.end())
    return InvalidArgumentError(fmt::format("segment descriptor: {} lacks field '{}'", where, name));
  try {
    *out = it->template get<T>();
  } catch (const json::exception& e) {
    return InvalidArgumentError(
        fmt::format("segment descriptor: field '{}' of {} has the wrong type ({})", name, where,
                    it->dump()));
  }
  return OkStatus();
}

}  // namespace

StatusOr<SegmentDescriptor> DecodeSegmentDescriptor(std::string_view text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return InvalidArgumentError("segment descriptor: not a JSON object");
  int version = 0;
  RETURN_IF_ERROR(Field(j, f::kFieldVersion, &version, "descriptor"));
  if (version != f::kDescriptorVersion)
    return InvalidArgumentError(fmt::format(
        "segment descriptor: version {} but this crescent speaks version {}; run the same "
        "crescent version on both ends",
        version, f::kDescriptorVersion));
  SegmentDescriptor d;
  std::string instance;
  RETURN_IF_ERROR(Field(j, f::kFieldName, &d.name, "descriptor"));
  RETURN_IF_ERROR(Field(j, f::kFieldInstance, &instance, "descriptor"));
  RETURN_IF_ERROR(Field(j, f::kFieldHostId, &d.host_id, "descriptor"));
  RETURN_IF_ERROR(Field(j, f::kFieldHost, &d.host, "descriptor"));
  RETURN_IF_ERROR(Field(j, f::kFieldTcpPort, &d.tcp_port, "descriptor"));
  RETURN_IF_ERROR(Field(j, f::kFieldShmSocket, &d.shm_socket, "descriptor"));
  RETURN_IF_ERROR(Field(j, f::kFieldPid, &d.pid, "descriptor"));
  char* end = nullptr;
  d.instance = std::strtoull(instance.c_str(), &end, 16);
  if (instance.size() != 16 || end != instance.c_str() + 16)
    return InvalidArgumentError(
        fmt::format("segment descriptor: instance '{}' is not 16 hex digits", instance));
  auto bufs = j.find(f::kFieldBuffers);
  if (bufs == j.end() || !bufs->is_array())
    return InvalidArgumentError("segment descriptor: 'buffers' is missing or not an array");
  for (size_t i = 0; i < bufs->size(); ++i) {
    const json& b = (*bufs)[i];
    std::string where = fmt::format("buffers[{}]", i);
    if (!b.is_object())
      return InvalidArgumentError(fmt::format("segment descriptor: {} is not an object", where));
    BufferDescriptor bd;
    RETURN_IF_ERROR(Field(b, f::kFieldBufId, &bd.id, where));
    RETURN_IF_ERROR(Field(b, f::kFieldBufOffset, &bd.offset, where));
    RETURN_IF_ERROR(Field(b, f::kFieldBufLength, &bd.length, where));
    RETURN_IF_ERROR(Field(b, f::kFieldBufShm, &bd.shm, where));
    if (bd.length == 0 || bd.offset + bd.length < bd.offset)
      return InvalidArgumentError(
          fmt::format("segment descriptor: {} has an empty or overflowing range", where));
    d.buffers.push_back(bd);
  }
  std::sort(d.buffers.begin(), d.buffers.end(),
            [](const auto& a, const auto& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < d.buffers.size(); ++i)
    if (d.buffers[i - 1].offset + d.buffers[i - 1].length > d.buffers[i].offset)
      return InvalidArgumentError("segment descriptor: buffers overlap");
  return d;
}

const std::string& HostId() {
  static const std::string id = [] {
    std::string boot;
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::getline(in, boot);
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    return boot + "/" + host;
  }();
  return id;
}

}  // namespace crescent::transfer
