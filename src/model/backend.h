// The engine-facing model API: load a checkpoint onto a compute backend,
// run batched forward passes over a paged KV cache, move KV blocks in and
// out. This header is all the engine and the KV connector need.
//
//   LoadModel(dir, options)        -> Backend (owns weights and the KV pool)
//   Backend::Forward(batch, &out)  -> logits of the rows the batch asked for
//   Backend::ReadKvBlocks / WriteKvBlocks  -> a block's bytes, all layers,
//                                     in the wire layout of kv_layout.h
//
// Paged KV cache. The backend owns a pool of `num_kv_blocks()` blocks of
// `kv_layout().block_size` token positions each, numbered 0..N-1. The
// backend does not allocate blocks: the engine's block manager decides
// which block holds what and passes, per sequence, a block table (block
// ids in position order: entry j holds positions [j*B, (j+1)*B)). A block
// may appear in many sequences' tables (shared prefix) as long as no two
// sequences of one batch write the same slot.
//
// Batched forward. One call runs any mix of whole prefills, prompt chunks
// and single-token decodes. Each sequence brings its new tokens and the
// position of the first of them; the KV of positions [0, position) must
// already be in its blocks (computed by an earlier call or written by
// WriteKvBlocks). The call writes the KV of the new tokens into the blocks,
// and every new token attends causally to all positions up to its own.
//
// Ownership: the Backend owns weights (memory-mapped checkpoint files for
// the CPU backend, device memory for a GPU one) and the KV pool; nothing it
// returns points into them. Inputs are borrowed for the duration of a call.
//
// Thread safety: const accessors are safe from any thread. Forward,
// ReadKvBlocks and WriteKvBlocks may be called from different threads
// concurrently only when they touch disjoint blocks; two Forward calls must
// not overlap (the backend parallelises each call internally).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "model/kv_layout.h"
#include "model/model_config.h"

namespace crescent::model {

// User knobs for LoadModel; defaults in the comments.
struct BackendOptions {
  std::string backend = "cpu";  // "cpu", or "cuda" in builds with the CUDA backend
  // Compute threads of the CPU backend, the caller's thread included;
  // 0 = all online CPUs.
  int num_threads = 0;
  int32_t kv_block_size = kDefaultKvBlockSize;  // tokens per KV block
  // KV pool size: num_kv_blocks when > 0, else as many blocks as fit in
  // kv_cache_bytes. CPU pool memory is reserved, not touched, up front.
  int32_t num_kv_blocks = 0;
  uint64_t kv_cache_bytes = 1ull << 30;  // 1 GiB
  // CUDA only. When > 0 (and num_kv_blocks is 0) the KV pool takes this
  // share of total device memory less what is in use once weights and
  // activation scratch are allocated (vLLM's --gpu-memory-utilization);
  // kv_cache_bytes is then ignored.
  double gpu_memory_utilization = 0;
  // CUDA only: tokens per Forward the activation scratch is sized for up
  // front (before the KV pool takes the rest); larger batches grow it.
  int32_t max_num_batched_tokens = 2048;
  // CUDA only: replay decode-only batches from captured CUDA graphs (one
  // per batch shape, captured the second time a shape runs); false runs
  // every kernel launch eagerly (vLLM's --enforce-eager).
  bool cuda_graphs = true;
};

// Which logits a sequence wants back.
enum class LogitsMode : uint8_t {
  kNone,  // a prompt chunk that is not the last: no logits
  kLast,  // logits of the last new token (end of prefill, decode)
  kAll,   // logits of every new token (prompt logprobs, tests)
};

// Drawing a sequence's next token on the device instead of returning its
// logits row (backends whose SupportsDeviceSampling() is true; the engine
// uses it when a request needs nothing the device sampler lacks). The
// semantics are the engine's sampler (src/engine/sampler.h) without
// penalties: greedy is the first index of the maximum; otherwise
// temperature, min_p, top_k, top_p, then `uniform` picks the token.
// Differences from the host sampler: tokens tied at the top_k/top_p cut are
// all kept, and the draw walks the kept tokens in id order (the host walks
// them best first), so a seeded draw has the same distribution, not always
// the same token.
struct SamplingRequest {
  float temperature = 0.0f;  // < 1e-5: greedy
  int32_t top_k = 0;         // <= 0: off
  float top_p = 1.0f;        // (0, 1]
  float min_p = 0.0f;        // [0, 1]
  // One draw in [0, 1) from the sequence's own generator: the one the host
  // sampler would have consumed (unused when greedy).
  double uniform = 0.0;
  bool logprob = false;  // also the token's logprob (raw logits) and rank
};

struct SampledToken {
  int32_t token = -1;     // -1: the sequence was not sampled
  float logprob = 0.0f;   // when SamplingRequest::logprob
  int32_t rank = 0;       // 1 + tokens with a larger logit, when asked
};

// One sequence's slice of a batch. Spans are borrowed for the call.
struct SequenceInput {
  std::span<const int32_t> tokens;  // new token ids [n], n >= 1, each < vocab_size
  int32_t position = 0;             // position of tokens[0]; tokens occupy [position, position+n)
  // Block ids covering positions [0, position + n): at least
  // ceil((position + n) / block_size) entries, each < num_kv_blocks().
  std::span<const int32_t> block_table;
  LogitsMode logits = LogitsMode::kLast;
  // With logits kLast on a backend that SupportsDeviceSampling(): draw the
  // next token on the device; the sequence then contributes no logits row
  // and its token is in ForwardOutput::sampled. Borrowed for the call.
  const SamplingRequest* sample = nullptr;
};

struct ForwardBatch {
  std::vector<SequenceInput> sequences;
};

// Logits of the requested rows, float32, host memory.
struct ForwardOutput {
  int32_t vocab_size = 0;
  // [num_rows][vocab_size]: the rows of sequence 0 first (its new tokens in
  // order), then sequence 1, ...; a kNone sequence contributes none.
  std::vector<float> logits;
  // [num_sequences + 1]: rows of sequence i are [row_begin[i], row_begin[i+1]).
  std::vector<int32_t> row_begin;
  // [num_sequences]: the tokens drawn for sequences with a SamplingRequest
  // (token -1 for the others).
  std::vector<SampledToken> sampled;

  std::span<const float> Row(int32_t row) const {
    return {logits.data() + static_cast<size_t>(row) * vocab_size, static_cast<size_t>(vocab_size)};
  }
  // The logits of the last requested row of sequence i (kLast or kAll).
  std::span<const float> LastRow(int32_t seq) const { return Row(row_begin[seq + 1] - 1); }
};

class Backend {
 public:
  virtual ~Backend() = default;

  // ---- constant after LoadModel ----
  virtual const ModelConfig& config() const = 0;
  virtual const KvBlockLayout& kv_layout() const = 0;
  virtual int32_t num_kv_blocks() const = 0;
  // Identifies the checkpoint (config + tensor table + sampled weight
  // bytes, xxh3-64, hex) for KV store key lineage: KV of another model is
  // never read.
  virtual const std::string& model_fingerprint() const = 0;
  virtual std::string_view name() const = 0;  // "cpu"
  // Whether Forward takes SequenceInput::sample (token ids back instead of
  // batch x vocabulary float32 logits).
  virtual bool SupportsDeviceSampling() const { return false; }

  // Runs the batch; fills `out` (reused across calls to avoid allocation).
  // INVALID_ARGUMENT names the sequence and field when a precondition of
  // SequenceInput does not hold; nothing is written to the KV pool then.
  [[nodiscard]] virtual Status Forward(const ForwardBatch& batch, ForwardOutput* out) = 0;

  // Copies blocks out of / into the pool, each as kv_layout().BlockBytes()
  // bytes in the wire layout, blocks back to back in `blocks` order.
  // `bytes` must be exactly blocks.size() * BlockBytes() long.
  [[nodiscard]] virtual Status ReadKvBlocks(std::span<const int32_t> blocks,
                                            std::span<std::byte> bytes) const = 0;
  [[nodiscard]] virtual Status WriteKvBlocks(std::span<const int32_t> blocks,
                                             std::span<const std::byte> bytes) = 0;

  // The KV pool itself when the backend keeps it in host memory in the
  // wire layout (CPU): block b is BlockBytes() bytes at
  // data() + b * BlockBytes(). Empty for a pool in device memory. A KV
  // connector registers it with the store and reads values straight into
  // blocks; writes through it follow the rules of WriteKvBlocks.
  virtual std::span<std::byte> HostKvPool() { return {}; }

  // Declares a host buffer that the caller passes (in whole or in part) to
  // ReadKvBlocks/WriteKvBlocks many times, e.g. a KV connector's staging
  // area. A device backend page-locks it so that those copies are DMA
  // straight to/from it instead of going through the backend's own pinned
  // staging; the CPU backend has nothing to do. The buffer must stay
  // allocated until UnregisterHostBuffer (or the Backend's destruction).
  virtual Status RegisterHostBuffer(std::span<std::byte> buffer) { return OkStatus(); }
  virtual Status UnregisterHostBuffer(std::span<std::byte> buffer) { return OkStatus(); }
};

// Opens the Hugging Face checkpoint in `model_dir` (config.json plus
// model.safetensors or model.safetensors.index.json with its shards) and
// builds the backend named in options. Errors name the file, the tensor
// and the expected shape.
StatusOr<std::unique_ptr<Backend>> LoadModel(std::string_view model_dir,
                                             const BackendOptions& options = {});

}  // namespace crescent::model
