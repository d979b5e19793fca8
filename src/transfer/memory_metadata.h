// A MetadataStore held in memory, shared by engines in one process. For
// unit tests of the engine only; processes use OpenMetadataStore.
#pragma once

#include <memory>

#include "transfer/metadata/metadata.h"

namespace crescent::transfer {

std::shared_ptr<MetadataStore> NewInProcessMetadataStore();

}  // namespace crescent::transfer
