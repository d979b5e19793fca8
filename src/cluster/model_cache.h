// The model `crescent up` serves when given none: a random-weight
// Qwen3-shaped checkpoint with the real Qwen3 tokenizer, made once by
// `crescent make-model` and kept in a cache directory.
#pragma once

#include <string>

#include "common/status.h"

namespace crescent::cluster {

// $CRESCENT_CACHE_DIR, else $XDG_CACHE_HOME/crescent, else ~/.cache/crescent.
std::string DefaultCacheDir();

// The directory of the cached model of `shape` (a `crescent make-model
// --shape`), making it first when missing: <cache_dir>/models/qwen3-<shape>
// for Qwen3 shapes, <cache_dir>/models/<shape> otherwise. Made in a
// temporary sibling and renamed, so an interrupted run leaves no half model.
// Fails, caching nothing, when make-model found no tokenizer files (they
// come from scripts/setup).
StatusOr<std::string> EnsureModel(const std::string& shape, const std::string& crescent_bin,
                                  const std::string& cache_dir);

}  // namespace crescent::cluster
