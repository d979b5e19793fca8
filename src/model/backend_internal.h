// Checks and identities every backend shares (cpu/, cuda/): one definition
// so that all backends accept the same batches and name a checkpoint alike.
// Internal to src/model.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"
#include "model/backend.h"
#include "model/safetensors.h"

namespace crescent::model {

// xxh3-64 (hex) of config.json, every safetensors header and the first and
// last 4 KiB of every tensor: Backend::model_fingerprint().
std::string ModelFingerprint(const Checkpoint& checkpoint, std::string_view config_text);

// The preconditions of SequenceInput (backend.h) for a pool of `num_blocks`
// blocks: INVALID_ARGUMENT naming the sequence and field, or OK. A
// SequenceInput::sample is accepted only with `device_sampling` (the
// backend's SupportsDeviceSampling()) and logits kLast.
Status ValidateForwardBatch(const ForwardBatch& batch, int32_t vocab_size,
                            const KvBlockLayout& layout, int32_t num_blocks,
                            bool device_sampling = false);

// ReadKvBlocks/WriteKvBlocks arguments: ids inside the pool and `bytes`
// exactly blocks.size() * BlockBytes().
Status CheckKvBlockList(std::span<const int32_t> blocks, size_t bytes,
                        const KvBlockLayout& layout, int32_t num_blocks);

}  // namespace crescent::model
