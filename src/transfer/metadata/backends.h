// Factories of the three MetadataStore backends; OpenMetadataStore
// (metadata_open.cc) picks one by spec.kind. Internal.
#pragma once

#include <memory>

#include "transfer/metadata/metadata.h"

namespace crescent::transfer {

StatusOr<std::unique_ptr<MetadataStore>> OpenHttpMetadataStore(const MetadataServerSpec& spec,
                                                               const MetadataOptions& options);
StatusOr<std::unique_ptr<MetadataStore>> OpenEtcdMetadataStore(const MetadataServerSpec& spec,
                                                               const MetadataOptions& options);
StatusOr<std::unique_ptr<MetadataStore>> OpenRedisMetadataStore(const MetadataServerSpec& spec,
                                                                const MetadataOptions& options);

}  // namespace crescent::transfer
