// The CudaBackend class, shared by cuda_backend.cc (load, memory, KV
// copies) and cuda_forward.cc (the forward pass). Internal to src/model/cuda.
//
// Threads: Forward runs on stream_ and owns every "Forward state" member (one
// Forward at a time, as backend.h requires); Read/WriteKvBlocks and the host
// buffer registry run on kv_stream_ under kv_mu_, so they may overlap a
// Forward on disjoint blocks. Both streams touch the KV pool only.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "model/backend.h"
#include "model/safetensors.h"
#include "model/cuda/decode_step.h"
#include "model/cuda/gemm.h"
#include "model/cuda/kernels.h"

namespace crescent::model::cuda {

// An owned device allocation (cudaMalloc); moves only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  Status Allocate(size_t bytes, const std::string& what);  // frees the old one first
  void Reset();
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// An owned page-locked host allocation (cudaMallocHost).
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { Reset(); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  Status Allocate(size_t bytes, const std::string& what);
  void Reset();
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// Device pointers of one decoder layer (into the weight arenas).
struct DeviceLayer {
  const bf16_t* qkv = nullptr;      // [Hq*D + 2*Hkv*D][H]: q_proj, k_proj, v_proj rows
  const bf16_t* o = nullptr;        // [H][Hq*D]
  const bf16_t* gate_up = nullptr;  // [2I][H]: gate_proj rows then up_proj rows
  const bf16_t* down = nullptr;     // [H][I]
  const float* input_norm = nullptr;  // [H]
  const float* post_norm = nullptr;   // [H]
  const float* q_norm = nullptr;      // [D] Qwen3, else null
  const float* k_norm = nullptr;      // [D] Qwen3, else null
  const float* qkv_bias = nullptr;    // [Hq*D + 2*Hkv*D] or null
  const float* o_bias = nullptr;      // [H] or null
  const float* gate_up_bias = nullptr;  // [2I] or null
  const float* down_bias = nullptr;     // [H] or null
};

// Device time per stage of the forward pass, from events between the
// stages, printed to stderr at exit when CRESCENT_PROFILE is set (as the
// CPU backend does; CRESCENT_PROFILE=decode counts decode-only batches,
// CRESCENT_PROFILE=prefill the batches with prompt chunks);
// graphs are off then, so the marks see every launch.
class StageProfile {
 public:
  enum Stage {
    kEmbed, kNorm, kQkv, kPrologue, kPrefillAttention, kDecodeAttention, kOProj, kGateUp,
    kSwiGlu, kDown, kLogits, kLogitsCopy, kNumStages
  };
  StageProfile();
  ~StageProfile();
  bool enabled() const { return enabled_; }
  // Marks the end of `stage` (and the start of the next) on `stream`.
  void Mark(Stage stage, cudaStream_t stream);
  // After the stream is synchronised: charges the marked intervals.
  void Collect(bool decode_batch);

 private:
  bool enabled_ = false, decode_only_ = false, prefill_only_ = false;
  std::vector<cudaEvent_t> events_;  // pool, reused every Forward
  std::vector<Stage> marks_;         // stage ended by events_[i]
  double ms_[kNumStages] = {};
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(ModelConfig config, std::string fingerprint);
  ~CudaBackend() override;

  // Uploads weights, allocates scratch and the KV pool.
  Status Init(const Checkpoint& checkpoint, const BackendOptions& options);

  const ModelConfig& config() const override { return config_; }
  const KvBlockLayout& kv_layout() const override { return layout_; }
  int32_t num_kv_blocks() const override { return num_blocks_; }
  const std::string& model_fingerprint() const override { return fingerprint_; }
  std::string_view name() const override { return "cuda"; }
  bool SupportsDeviceSampling() const override { return true; }

  Status Forward(const ForwardBatch& batch, ForwardOutput* out) override;
  Status ReadKvBlocks(std::span<const int32_t> blocks, std::span<std::byte> bytes) const override;
  Status WriteKvBlocks(std::span<const int32_t> blocks, std::span<const std::byte> bytes) override;
  Status RegisterHostBuffer(std::span<std::byte> buffer) override;
  Status UnregisterHostBuffer(std::span<std::byte> buffer) override;

 private:
  Status UploadWeights(const Checkpoint& checkpoint);
  Status EnsureScratch(int64_t tokens);
  Status SizeKvPool(const BackendOptions& options);
  // y[T][N] = x[T][K] (bf16) * w[N][K]^T (bf16), stored, added or rounded
  // to bf16 per `out` (gemm.h): GEMVs at decode sizes, cuBLASLt otherwise.
  Status Gemm(const bf16_t* x, int64_t T, int64_t K, const bf16_t* w, int64_t N, void* y,
              GemmOut out, const char* what);
  // Enqueues embedding, layers and the logits of rows [0, logit_rows) of
  // the planned batch: what a decode graph captures.
  Status RunNetwork(int64_t T, int64_t logit_rows);
  Status RunLayer(int layer, int64_t T, bool has_prefill, bool has_decode);
  // Final norm + lm_head of requested rows [r0, r0 + n) into logits_.
  Status RunLogits(int64_t r0, int64_t n);
  Status Capture(int64_t T, int64_t R, cudaGraphExec_t* exec);
  // Whether a batch of T tokens runs the fused decode path (GEMVs with the
  // norms, SwiGLU and residual adds folded in).
  bool FusedDecode(int64_t T) const;
  // Whether the last layer's down_proj output of a T-token batch still
  // waits in delta_ for the final norm to add it (only with a bias).
  bool DeltaPending(int64_t T) const;
  // The persistent batch-1 step (decode_step.h): buffers and the device
  // layer table at Init when the shape and device allow it.
  Status InitDecodeStep();
  Status RunDecodeStep(bool want_logits);
  void DropGraphs();
  // Copies `bytes` between the pool blocks and a host buffer through
  // pinned staging unless the host buffer is page-locked.
  Status CopyKv(std::span<const int32_t> blocks, std::byte* host, size_t bytes,
                bool to_host) const;

  // ---- constant after Init ----
  ModelConfig config_;
  std::string fingerprint_;
  KvBlockLayout layout_;
  int32_t num_blocks_ = 0;
  int num_sms_ = 0;
  cudaStream_t stream_ = nullptr;     // Forward
  cudaStream_t kv_stream_ = nullptr;  // Read/WriteKvBlocks
  cublasHandle_t cublas_ = nullptr;
  DeviceBuffer matrices_;   // bf16 weight arena
  DeviceBuffer vectors_;    // float32 norms and biases
  DeviceBuffer inv_freq_;   // [D/2] RoPE inverse frequencies
  DeviceBuffer kv_pool_;    // [num_blocks][BlockElements()] bf16
  DeviceBuffer cublas_workspace_;
  GemmRunner gemm_;  // prefill-size projections (gemm.h), on stream_ with cublas_workspace_
  std::vector<DeviceLayer> layers_;
  const bf16_t* embed_ = nullptr;    // [V][H]
  const bf16_t* lm_head_ = nullptr;  // [V][H]
  const float* final_norm_ = nullptr;  // [H]

  // ---- Forward state (one Forward at a time) ----
  int64_t scratch_tokens_ = 0;  // capacity of the per-token buffers below
  int64_t scratch_used_ = 0;    // tokens of the batch in flight
  DeviceBuffer x_;       // [T][H] float32 residual stream
  DeviceBuffer delta_;   // [T][H] float32 o_proj / down_proj output
  DeviceBuffer xn_;      // [T][H] bf16 normalised
  DeviceBuffer qkv_;     // [T][Hq*D + 2*Hkv*D] float32 (bf16 for prefill-only batches)
  DeviceBuffer attn_;    // [T][Hq*D] bf16 (q on its way into prefill attention, then its output)
  DeviceBuffer gu_;      // [T][2I] float32 (decode GEMVs) or bf16 (GEMMs)
  DeviceBuffer act_;     // [T][I] bf16
  DeviceBuffer cos_, sin_;  // [T][D/2] float32
  DeviceBuffer logits_;  // [kLogitsChunkRows][V] float32
  DeviceBuffer partial_;  // split-K partials, grown on demand
  DeviceBuffer split_counters_;  // [decode items][Hkv] int32, zero between launches
  DeviceBuffer meta_;     // int32 metadata of the batch (see cuda_forward.cc)
  PinnedBuffer meta_host_;
  PinnedBuffer logits_host_;  // [kLogitsChunkRows][V] float32
  DeviceBuffer sample_out_;       // DeviceSampleResult per sampled sequence
  PinnedBuffer sample_out_host_;
  // Offsets (int32 elements) into meta_ of the current batch.
  struct MetaLayout {
    size_t ids, positions, slots, rows, tables, decode, tiles, rope, sample;
  } meta_at_{};
  int32_t num_decode_ = 0, num_tiles_ = 0, splits_ = 1, split_len_ = 0;
  // Decode graphs by batch shape: every buffer address and metadata offset
  // they use is fixed by (tokens, logits rows, splits, split length) as long
  // as no buffer is reallocated (which drops them all).
  struct GraphKey {
    int64_t tokens, rows;
    int32_t splits, split_len;
    auto operator<=>(const GraphKey&) const = default;
  };
  bool graphs_enabled_ = true;
  std::map<GraphKey, cudaGraphExec_t> graphs_;
  std::set<GraphKey> graph_seen_;  // shapes run once eagerly

  // Persistent batch-1 decode step (decode_step.h); off when
  // CRESCENT_CUDA_DECODE_STEP=0, under CRESCENT_PROFILE, or unsupported.
  bool step_enabled_ = false;
  DeviceBuffer step_layers_;   // [L] StepLayer
  DeviceBuffer step_sync_;     // DecodeStepExchangeWords (exchange buffers, head counters)
  DeviceBuffer step_partial_;  // split partials
  uint32_t step_epoch_ = 0;    // launches so far (the exchanged values' tags)
  std::vector<float> inv_freq_host_;  // RoPE tables of the step, computed here
  // CRESCENT_STEP_TRACE=1: per-stage timestamps of every step, summed
  // per stage kind and printed to stderr at exit (decode_step.h).
  DeviceBuffer step_trace_;
  std::vector<uint64_t> step_trace_host_;
  double step_trace_ns_[24] = {};
  double step_trace_waits_[8] = {};
  int64_t step_trace_steps_ = 0;
  cudaEvent_t step_events_[2] = {nullptr, nullptr};  // CRESCENT_STEP_TRACE=events
  std::vector<float> step_event_ms_;
  void AddStepTrace();
  void PrintStepTrace() const;

  StageProfile profile_;

  // ---- KV copies: guarded by kv_mu_ ----
  mutable std::mutex kv_mu_;
  mutable PinnedBuffer kv_staging_;  // 2 halves, double-buffered
  std::vector<void*> registered_;    // RegisterHostBuffer'd, unregistered at destruction
  cudaEvent_t kv_events_[2] = {nullptr, nullptr};
};

}  // namespace crescent::model::cuda
