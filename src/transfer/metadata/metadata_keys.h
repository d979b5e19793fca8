// The metadata key schema (the spec is docs/metadata.md; keep both in step).
//
// Every key starts with a cluster id, so several Crescent clusters can
// share one etcd or redis without seeing each other's entries:
//
//   <cluster>/segments/<segment name>    a segment descriptor (JSON, the
//                                        transfer engine's format)
//   <cluster>/endpoints/<role>/<id>      "host:port" of a service instance
//                                        (reserved for master/serve/proxy)
//
// Everything is in namespace crescent::transfer::keys (keys::SegmentKey...).
// The cluster id defaults to "crescent" (kDefaultClusterId) and is chosen
// by the caller (a --cluster-id flag, an engine option). It must be
// non-empty and contain no '/'. Segment names may contain any bytes except
// that List(SegmentPrefix(c)) treats everything after the prefix as the name.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace crescent::transfer::keys {

inline constexpr std::string_view kDefaultClusterId = "crescent";
inline constexpr std::string_view kSegmentsDir = "segments/";
inline constexpr std::string_view kEndpointsDir = "endpoints/";

// INVALID_ARGUMENT naming the id when it is empty or contains '/'.
Status ValidateClusterId(std::string_view cluster_id);

// "<cluster>/"
std::string ClusterPrefix(std::string_view cluster_id);
// "<cluster>/segments/" and "<cluster>/segments/<name>"
std::string SegmentPrefix(std::string_view cluster_id);
std::string SegmentKey(std::string_view cluster_id, std::string_view segment_name);
// "<cluster>/endpoints/<role>/" and "<cluster>/endpoints/<role>/<id>"
std::string EndpointPrefix(std::string_view cluster_id, std::string_view role);
std::string EndpointKey(std::string_view cluster_id, std::string_view role, std::string_view id);

}  // namespace crescent::transfer::keys
