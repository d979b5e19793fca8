// The CPU backend: float32 math over memory-mapped weights (kept in the
// checkpoint's dtype and widened inside the kernels), a paged KV pool in
// anonymous memory in exactly the wire layout of kv_layout.h, and a
// persistent thread pool. Reached through LoadModel (backend.h).
#pragma once

#include <memory>

#include "model/backend.h"
#include "model/safetensors.h"

namespace crescent::model::cpu {

// Takes ownership of the mapped checkpoint; `config_text` is config.json as
// read (part of the model fingerprint).
StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(std::unique_ptr<Checkpoint> checkpoint,
                                                    const ModelConfig& config,
                                                    std::string_view config_text,
                                                    const BackendOptions& options);

}  // namespace crescent::model::cpu
