#include <fmt/format.h>

#include "transfer/metadata/backends.h"
#include "transfer/metadata/metadata.h"

namespace crescent::transfer {

StatusOr<std::unique_ptr<MetadataStore>> OpenMetadataStore(const MetadataServerSpec& spec,
                                                            const MetadataOptions& options) {
  if (spec.endpoints.empty())
    return InvalidArgumentError(fmt::format("metadata_server '{}' names no host:port", spec.original));
  if (options.ttl < std::chrono::milliseconds(100))
    return InvalidArgumentError(fmt::format("metadata ttl {} ms is too short; use at least 100 ms",
                                            options.ttl.count()));
  switch (spec.kind) {
    case MetadataServerSpec::Kind::kHttp: return OpenHttpMetadataStore(spec, options);
    case MetadataServerSpec::Kind::kEtcd: return OpenEtcdMetadataStore(spec, options);
    case MetadataServerSpec::Kind::kRedis: return OpenRedisMetadataStore(spec, options);
  }
  return InternalError("unknown metadata server kind");
}

}  // namespace crescent::transfer
