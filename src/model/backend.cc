#include "model/backend.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>

#include "common/config.h"
#include "model/backend_internal.h"
#include "model/cpu/cpu_backend.h"
#ifdef CRESCENT_HAVE_CUDA
#include "model/cuda/cuda_backend.h"
#endif
#include "model/safetensors.h"

namespace crescent::model {

const char* KvDtypeName(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kFloat32:
      return "f32";
    case KvDtype::kBFloat16:
      return "bf16";
    case KvDtype::kFloat16:
      return "f16";
  }
  return "?";
}

std::string KvBlockLayout::Tag() const {
  return "kv" + std::to_string(kKvLayoutVersion) + "-" + KvDtypeName(dtype) + "-L" +
         std::to_string(num_layers) + "-H" + std::to_string(num_kv_heads) + "-D" +
         std::to_string(head_dim) + "-B" + std::to_string(block_size);
}

namespace {
// Bytes sampled from each end of every tensor for the fingerprint.
constexpr size_t kFingerprintSample = 4096;
}  // namespace

std::string ModelFingerprint(const Checkpoint& ckpt, std::string_view config_text) {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, config_text.data(), config_text.size());
  for (const std::string& h : ckpt.headers()) XXH3_64bits_update(st, h.data(), h.size());
  for (const auto& [name, t] : ckpt.tensors()) {
    const char* p = static_cast<const char*>(t.data);
    size_t n = std::min(t.bytes, kFingerprintSample);
    XXH3_64bits_update(st, p, n);
    XXH3_64bits_update(st, p + t.bytes - n, n);
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx",
                static_cast<unsigned long long>(XXH3_64bits_digest(st)));
  XXH3_freeState(st);
  return buf;
}

Status ValidateForwardBatch(const ForwardBatch& batch, int32_t vocab_size,
                            const KvBlockLayout& layout, int32_t num_blocks,
                            bool device_sampling) {
  if (batch.sequences.empty()) return InvalidArgumentError("forward batch has no sequences");
  std::vector<int64_t> slots;
  for (size_t i = 0; i < batch.sequences.size(); ++i) {
    const SequenceInput& s = batch.sequences[i];
    const std::string where = "sequence " + std::to_string(i) + ": ";
    if (s.tokens.empty()) return InvalidArgumentError(where + "no new tokens");
    if (s.position < 0) return InvalidArgumentError(where + "negative position");
    if (s.sample && !device_sampling) {
      return InvalidArgumentError(where + "asks for device sampling, which this backend has "
                                          "not (Backend::SupportsDeviceSampling)");
    }
    if (s.sample && s.logits != LogitsMode::kLast) {
      return InvalidArgumentError(where + "device sampling needs logits mode kLast");
    }
    for (int32_t t : s.tokens) {
      if (t < 0 || t >= vocab_size) {
        return InvalidArgumentError(where + "token id " + std::to_string(t) +
                                    " is outside the vocabulary [0, " +
                                    std::to_string(vocab_size) + ")");
      }
    }
    const int64_t end = int64_t{s.position} + static_cast<int64_t>(s.tokens.size());
    const int64_t need = (end + layout.block_size - 1) / layout.block_size;
    if (static_cast<int64_t>(s.block_table.size()) < need) {
      return InvalidArgumentError(where + "block table has " +
                                  std::to_string(s.block_table.size()) + " blocks; positions [0, " +
                                  std::to_string(end) + ") need " + std::to_string(need) + " of " +
                                  std::to_string(layout.block_size) + " tokens");
    }
    for (int64_t j = 0; j < need; ++j) {
      if (s.block_table[j] < 0 || s.block_table[j] >= num_blocks) {
        return InvalidArgumentError(where + "block id " + std::to_string(s.block_table[j]) +
                                    " is outside the pool [0, " + std::to_string(num_blocks) +
                                    ")");
      }
    }
    for (int64_t p = s.position; p < end; ++p) {
      slots.push_back(int64_t{s.block_table[p / layout.block_size]} * layout.block_size +
                      p % layout.block_size);
    }
  }
  std::sort(slots.begin(), slots.end());
  if (std::adjacent_find(slots.begin(), slots.end()) != slots.end()) {
    return InvalidArgumentError(
        "two new tokens of the batch write the same KV slot (block " +
        std::to_string(*std::adjacent_find(slots.begin(), slots.end()) / layout.block_size) +
        "); blocks written in one batch must not be shared");
  }
  return OkStatus();
}

Status CheckKvBlockList(std::span<const int32_t> blocks, size_t bytes,
                        const KvBlockLayout& layout, int32_t num_blocks) {
  if (bytes != blocks.size() * layout.BlockBytes()) {
    return InvalidArgumentError("KV copy of " + std::to_string(blocks.size()) + " blocks needs " +
                                std::to_string(blocks.size() * layout.BlockBytes()) +
                                " bytes, got " + std::to_string(bytes));
  }
  for (int32_t b : blocks) {
    if (b < 0 || b >= num_blocks) {
      return InvalidArgumentError("KV block id " + std::to_string(b) + " is outside the pool [0, " +
                                  std::to_string(num_blocks) + ")");
    }
  }
  return OkStatus();
}

StatusOr<std::unique_ptr<Backend>> LoadModel(std::string_view model_dir,
                                             const BackendOptions& options) {
  const std::string config_path = std::string(model_dir) + "/config.json";
  auto text = ReadFile(config_path);
  if (!text.ok()) {
    return Status(text.status().code(), text.status().message() +
                                            " (a model directory holds config.json and "
                                            "model.safetensors, as on the Hugging Face Hub)");
  }
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(*text, config_path));
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(model_dir));
  if (options.kv_block_size <= 0 || options.kv_block_size > 4096) {
    return InvalidArgumentError("kv_block_size must be in [1, 4096], got " +
                                std::to_string(options.kv_block_size));
  }
  if (options.backend == "cpu") {
    return cpu::CreateCpuBackend(std::move(checkpoint), config, *text, options);
  }
#ifdef CRESCENT_HAVE_CUDA
  if (options.backend == "cuda") {
    return cuda::CreateCudaBackend(std::move(checkpoint), config, *text, options);
  }
  constexpr const char* kAvailable = "cpu, cuda";
#else
  constexpr const char* kAvailable = "cpu";
#endif
  return UnimplementedError("backend \"" + options.backend +
                            "\" is not available in this build (available: " + kAvailable + ")");
}

}  // namespace crescent::model
