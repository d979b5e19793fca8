#include "transfer/metadata/metadata_keys.h"

#include <fmt/format.h>

namespace crescent::transfer::keys {

Status ValidateClusterId(std::string_view id) {
  if (id.empty() || id.find('/') != std::string_view::npos)
    return InvalidArgumentError(fmt::format(
        "cluster id '{}' is invalid: it must be non-empty and contain no '/' (default \"{}\")", id,
        kDefaultClusterId));
  return OkStatus();
}

std::string ClusterPrefix(std::string_view c) { return fmt::format("{}/", c); }
std::string SegmentPrefix(std::string_view c) { return fmt::format("{}/{}", c, kSegmentsDir); }
std::string SegmentKey(std::string_view c, std::string_view name) {
  return fmt::format("{}/{}{}", c, kSegmentsDir, name);
}
std::string EndpointPrefix(std::string_view c, std::string_view role) {
  return fmt::format("{}/{}{}/", c, kEndpointsDir, role);
}
std::string EndpointKey(std::string_view c, std::string_view role, std::string_view id) {
  return fmt::format("{}/{}{}/{}", c, kEndpointsDir, role, id);
}

}  // namespace crescent::transfer::keys
