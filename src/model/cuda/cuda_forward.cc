// CudaBackend::Forward: plans the batch on the host (one int32 metadata
// upload), then per layer: residual+RMSNorm, fused q/k/v GEMM, prologue
// (bias, q/k-norm, RoPE, KV write), attention (tensor-core tiles for
// prompt chunks, split-K for decodes), o_proj, residual+RMSNorm, fused
// gate/up GEMM, SwiGLU, down_proj; then the final norm and lm_head over the
// requested rows only, in chunks. Batches of at most kGemvMaxRows tokens
// take the fused decode path (GEMVs with norms, SwiGLU and residual adds
// folded in: 6 kernels per layer) and, when decode-only, CUDA graphs.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <thread>

#include "model/backend_internal.h"
#include "model/cuda/backend_impl.h"
#include "model/cuda/cuda_util.h"
#include "model/rope.h"
#include "common/logging.h"

namespace crescent::model::cuda {
namespace {

// A sequence with at least this many new tokens goes through the tiled
// prefill kernel; shorter ones (decodes, small speculative chunks) through
// the split-K decode kernel, one query token per item.
constexpr int32_t kPrefillMinTokens = 16;
// Rows of logits computed and copied per lm_head GEMM.
constexpr int64_t kLogitsChunkRows = 256;
// Split-K: aim for this many blocks per multiprocessor; a split attends
// at most kMaxSplitLen keys (more splits, more parallel memory streams).
constexpr int32_t kDecodeBlocksPerSm = 2;
constexpr int32_t kMaxSplitLen = 1024;
constexpr int32_t kMinSplitLen = 32;
// Decode split lengths are rounded up to this so that a captured graph
// (whose launches bake in the split length) serves many steps.
constexpr int32_t kSplitLenQuantum = 32;
// Captured decode graphs kept; all are dropped when full.
constexpr size_t kMaxGraphs = 64;

// Logits leave pinned staging for the caller's vector with several threads
// when large: one thread copies ~10 GB/s, a batch of 256 Qwen3 rows is
// 155 MB.
constexpr size_t kParallelCopyMinBytes = 8u << 20;
constexpr int kCopyThreads = 8;

void CopyOut(void* dst, const void* src, size_t bytes) {
  if (bytes < kParallelCopyMinBytes) {
    std::memcpy(dst, src, bytes);
    return;
  }
  std::vector<std::thread> threads;
  const size_t piece = (bytes / kCopyThreads + 4095) / 4096 * 4096;
  for (size_t off = piece; off < bytes; off += piece) {
    threads.emplace_back([=] {
      std::memcpy(static_cast<char*>(dst) + off, static_cast<const char*>(src) + off,
                  std::min(piece, bytes - off));
    });
  }
  std::memcpy(dst, src, std::min(piece, bytes));
  for (std::thread& t : threads) t.join();
}

constexpr const char* kStageNames[StageProfile::kNumStages] = {
    "embed+rope", "norms", "qkv", "qkv prologue", "prefill attention", "decode attention",
    "o_proj", "gate+up", "swiglu", "down", "lm_head", "logits copy"};

}  // namespace

StageProfile::StageProfile() {
  const char* mode = std::getenv("CRESCENT_PROFILE");
  enabled_ = mode != nullptr;
  if (enabled_) SetChainedLaunches(false);
  decode_only_ = enabled_ && std::string_view(mode) == "decode";
  prefill_only_ = enabled_ && std::string_view(mode) == "prefill";
}

StageProfile::~StageProfile() {
  if (!enabled_) return;
  double total = 0;
  for (double t : ms_) total += t;
  for (int i = 0; i < kNumStages; ++i) {
    std::fprintf(stderr, "profile: %-18s %9.3f ms %5.1f%%\n", kStageNames[i], ms_[i],
                 total > 0 ? 100 * ms_[i] / total : 0.0);
  }
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
}

void StageProfile::Mark(Stage stage, cudaStream_t stream) {
  if (!enabled_) return;
  if (marks_.size() == events_.size()) {
    cudaEvent_t e;
    if (cudaEventCreate(&e) != cudaSuccess) return;
    events_.push_back(e);
  }
  cudaEventRecord(events_[marks_.size()], stream);
  marks_.push_back(stage);
}

void StageProfile::Collect(bool decode_batch) {
  if (!enabled_) return;
  if ((decode_only_ && !decode_batch) || (prefill_only_ && decode_batch)) {
    marks_.clear();
    return;
  }
  for (size_t i = 1; i < marks_.size(); ++i) {
    float ms = 0;
    cudaEventElapsedTime(&ms, events_[i - 1], events_[i]);
    ms_[marks_[i]] += ms;
  }
  marks_.clear();
}

Status CudaBackend::EnsureScratch(int64_t tokens) {
  if (tokens <= scratch_tokens_) return OkStatus();
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  const int64_t QD = int64_t{c.num_heads} * D, KD = int64_t{c.num_kv_heads} * D;
  const size_t T = static_cast<size_t>(tokens);
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_), "finish work before growing scratch");
  RETURN_IF_ERROR(x_.Allocate(T * H * 4, "the residual stream"));
  RETURN_IF_ERROR(delta_.Allocate(T * H * 4, "projection outputs"));
  RETURN_IF_ERROR(xn_.Allocate(T * H * 2, "normalised activations"));
  RETURN_IF_ERROR(qkv_.Allocate(T * (QD + 2 * KD) * 4, "q/k/v"));
  RETURN_IF_ERROR(attn_.Allocate(T * QD * 2, "attention outputs"));
  RETURN_IF_ERROR(gu_.Allocate(T * 2 * I * 4, "gate/up outputs"));
  RETURN_IF_ERROR(act_.Allocate(T * I * 2, "SwiGLU outputs"));
  RETURN_IF_ERROR(cos_.Allocate(T * (D / 2) * 4, "RoPE cos table"));
  RETURN_IF_ERROR(sin_.Allocate(T * (D / 2) * 4, "RoPE sin table"));
  const size_t logit_rows = static_cast<size_t>(std::min<int64_t>(tokens, kLogitsChunkRows));
  if (logits_.bytes() < logit_rows * c.vocab_size * 4) {
    RETURN_IF_ERROR(logits_.Allocate(logit_rows * c.vocab_size * 4, "logits"));
    RETURN_IF_ERROR(logits_host_.Allocate(logit_rows * c.vocab_size * 4, "logits"));
  }
  scratch_tokens_ = tokens;
  DropGraphs();  // they point at the old buffers
  return OkStatus();
}

Status CudaBackend::Gemm(const bf16_t* x, int64_t T, int64_t K, const bf16_t* w, int64_t N,
                         void* y, GemmOut out, const char* what) {
  if (T <= kGemvMaxRows && K % 8 == 0 && out != GemmOut::kBf16) {
    // Decode sizes: stream the weights once.
    GemvArgs g;
    g.x = x;
    g.w = w;
    g.y = static_cast<float*>(y);
    g.accumulate = out == GemmOut::kF32Add;
    g.T = static_cast<int32_t>(T);
    g.K = static_cast<int32_t>(K);
    g.N = static_cast<int32_t>(N);
    RETURN_IF_CUDA_ERROR(LaunchGemv(g, stream_), what);
    return OkStatus();
  }
  // A residual add tunes into delta_ (scratch of the same [T][H] shape).
  float* scratch =
      out == GemmOut::kF32Add && N == config_.hidden_size ? delta_.as<float>() : nullptr;
  return gemm_.Run(x, T, K, w, N, y, out, scratch, what);
}

Status CudaBackend::Forward(const ForwardBatch& batch, ForwardOutput* out) {
  RETURN_IF_ERROR(ValidateForwardBatch(batch, config_.vocab_size, layout_, num_blocks_,
                                       /*device_sampling=*/true));
  const ModelConfig& c = config_;
  const int32_t B = layout_.block_size;
  const bool tiles_ok = PrefillAttentionSupports(c.head_dim);

  // ---- plan on the host: token rows, logits rows, block tables, work ----
  int64_t T = 0, R = 0, table_len = 0;
  for (const SequenceInput& s : batch.sequences) {
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    T += n;
    R += s.logits == LogitsMode::kAll ? n : (s.logits == LogitsMode::kLast ? 1 : 0);
    table_len += (s.position + n + B - 1) / B;
  }
  std::vector<int32_t> ids, positions, slots, rows, tables;
  std::vector<DecodeItem> decode;
  std::vector<PrefillTile> tiles;
  ids.reserve(T);
  positions.reserve(T);
  slots.reserve(T);
  rows.reserve(R);
  tables.reserve(table_len);
  out->vocab_size = c.vocab_size;
  out->row_begin.assign(1, 0);
  std::vector<int32_t> sample_rows, sample_seqs;
  std::vector<DeviceSampleParams> sample_params;
  int32_t max_decode_ctx = 0;
  for (const SequenceInput& s : batch.sequences) {
    const int32_t n = static_cast<int32_t>(s.tokens.size());
    const int32_t row0 = static_cast<int32_t>(ids.size());
    const int32_t table_offset = static_cast<int32_t>(tables.size());
    const int32_t need = (s.position + n + B - 1) / B;
    tables.insert(tables.end(), s.block_table.begin(), s.block_table.begin() + need);
    for (int32_t i = 0; i < n; ++i) {
      const int32_t pos = s.position + i;
      ids.push_back(s.tokens[i]);
      positions.push_back(pos);
      slots.push_back(s.block_table[pos / B] * B + pos % B);
    }
    if (tiles_ok && n >= kPrefillMinTokens) {
      for (int32_t i = 0; i < n; i += kPrefillTileRows) {
        tiles.push_back({row0 + i, s.position + i, std::min(kPrefillTileRows, n - i),
                         table_offset});
      }
    } else {
      for (int32_t i = 0; i < n; ++i) decode.push_back({row0 + i, s.position + i, table_offset, 0});
      max_decode_ctx = std::max(max_decode_ctx, s.position + n);
    }
    if (s.sample) {  // drawn on the device: its row goes after the host rows
      const SamplingRequest& q = *s.sample;
      sample_rows.push_back(row0 + n - 1);
      sample_params.push_back({q.temperature, q.top_p, q.min_p, q.top_k, q.uniform,
                               q.logprob ? 1 : 0, 0});
      sample_seqs.push_back(static_cast<int32_t>(out->row_begin.size() - 1));
    } else if (s.logits == LogitsMode::kAll) {
      for (int32_t i = 0; i < n; ++i) rows.push_back(row0 + i);
    } else if (s.logits == LogitsMode::kLast) {
      rows.push_back(row0 + n - 1);
    }
    out->row_begin.push_back(static_cast<int32_t>(rows.size()));
  }
  // Logits rows: the host's first, then the sampled ones (row index within
  // their logits chunk).
  const int64_t host_rows = static_cast<int64_t>(rows.size());
  for (size_t k = 0; k < sample_rows.size(); ++k) {
    sample_params[k].row = static_cast<int32_t>((host_rows + static_cast<int64_t>(k)) %
                                                kLogitsChunkRows);
    rows.push_back(sample_rows[k]);
  }
  // Longest tiles (most keys) first: they set the kernel's tail.
  std::sort(tiles.begin(), tiles.end(),
            [](const PrefillTile& a, const PrefillTile& b) { return a.position > b.position; });
  num_decode_ = static_cast<int32_t>(decode.size());
  num_tiles_ = static_cast<int32_t>(tiles.size());
  if (num_decode_ > 0) {
    // Enough (item, kv head, split) blocks to fill the device.
    const int64_t want = int64_t{kDecodeBlocksPerSm} * num_sms_;
    const int64_t have = int64_t{num_decode_} * c.num_kv_heads;
    int32_t splits = static_cast<int32_t>(std::clamp<int64_t>(
        (want + have - 1) / have, 1, (max_decode_ctx + kMinSplitLen - 1) / kMinSplitLen));
    int32_t split_len = (max_decode_ctx + splits - 1) / splits;
    split_len = (split_len + kSplitLenQuantum - 1) / kSplitLenQuantum * kSplitLenQuantum;
    if (split_len > kMaxSplitLen) {
      split_len = kMaxSplitLen;
      splits = (max_decode_ctx + split_len - 1) / split_len;
    }
    splits_ = splits;
    split_len_ = split_len;
    if (splits > 1) {
      const size_t need = static_cast<size_t>(num_decode_) * c.num_heads * splits *
                          (c.head_dim + 2) * sizeof(float);
      const size_t counters = static_cast<size_t>(num_decode_) * c.num_kv_heads * 4;
      if (partial_.bytes() < need || split_counters_.bytes() < counters) {
        RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_), "grow split-K buffers");
        RETURN_IF_ERROR(partial_.Allocate(std::max(need * 2, partial_.bytes()), "split-K partials"));
        RETURN_IF_ERROR(split_counters_.Allocate(std::max(counters * 2, split_counters_.bytes()),
                                                 "split-K counters"));
        RETURN_IF_CUDA_ERROR(
            cudaMemset(split_counters_.as<void>(), 0, split_counters_.bytes()),
            "clear split-K counters");
        DropGraphs();
      }
    }
  }
  RETURN_IF_ERROR(EnsureScratch(T));

  // ---- one upload of all metadata ----
  size_t at = 0;
  auto place = [&](size_t n) {
    const size_t here = at;
    at += (n + 3) / 4 * 4;  // 16-byte alignment for the structs
    return here;
  };
  meta_at_.ids = place(T);
  meta_at_.positions = place(T);
  meta_at_.slots = place(T);
  meta_at_.rows = place(R);
  meta_at_.decode = place(decode.size() * 4);
  meta_at_.tiles = place(tiles.size() * 4);
  // One decode token alone runs the persistent step (decode_step.h), which
  // takes its RoPE tables from here (the CPU backend's, bit for bit).
  const bool stepped = step_enabled_ && T == 1 && num_decode_ == 1 && R <= 1;
  meta_at_.rope = place(stepped ? c.head_dim : 0);
  // Last, so that every other offset depends on the batch's shape only (a
  // captured graph reads them at fixed addresses while tables grow).
  meta_at_.tables = place(tables.size());
  // After the tables: a captured graph never reads these.
  meta_at_.sample = place(sample_params.size() * sizeof(DeviceSampleParams) / 4);
  if (meta_host_.bytes() < at * 4) {
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_), "grow batch metadata");
    RETURN_IF_ERROR(meta_host_.Allocate(std::max<size_t>(at * 8, 1 << 20), "batch metadata"));
    RETURN_IF_ERROR(meta_.Allocate(std::max<size_t>(at * 8, 1 << 20), "batch metadata"));
    DropGraphs();
  }
  int32_t* h = meta_host_.as<int32_t>();
  std::memcpy(h + meta_at_.ids, ids.data(), ids.size() * 4);
  std::memcpy(h + meta_at_.positions, positions.data(), positions.size() * 4);
  std::memcpy(h + meta_at_.slots, slots.data(), slots.size() * 4);
  std::memcpy(h + meta_at_.rows, rows.data(), rows.size() * 4);
  std::memcpy(h + meta_at_.tables, tables.data(), tables.size() * 4);
  std::memcpy(h + meta_at_.sample, sample_params.data(),
              sample_params.size() * sizeof(DeviceSampleParams));
  std::memcpy(h + meta_at_.decode, decode.data(), decode.size() * sizeof(DecodeItem));
  std::memcpy(h + meta_at_.tiles, tiles.data(), tiles.size() * sizeof(PrefillTile));
  if (stepped) {
    float* rope = reinterpret_cast<float*>(h + meta_at_.rope);
    RopeCosSin(inv_freq_host_, positions[0], rope, rope + c.head_dim / 2);
  }
  RETURN_IF_CUDA_ERROR(
      cudaMemcpyAsync(meta_.as<void>(), h, at * 4, cudaMemcpyHostToDevice, stream_),
      "upload batch metadata");

  // ---- the network: replayed from a graph for decode batches seen before ----
  profile_.Mark(StageProfile::kEmbed, stream_);  // start
  const bool graphable = !stepped && !profile_.enabled() && graphs_enabled_ && num_tiles_ == 0 &&
                         R <= kLogitsChunkRows && R > 0;
  bool ran = false;
  if (graphable) {
    const GraphKey key{T, R, splits_, split_len_};
    auto it = graphs_.find(key);
    if (it == graphs_.end() && graph_seen_.count(key)) {
      // Second time this shape comes: capture it (the first eager run has
      // set every kernel attribute and cuBLAS heuristic).
      if (graphs_.size() >= kMaxGraphs) DropGraphs();
      cudaGraphExec_t exec = nullptr;
      Status captured = Capture(T, R, &exec);
      if (captured.ok()) {
        it = graphs_.emplace(key, exec).first;
      } else {
        spdlog::warn("cuda backend: CUDA graph capture failed, running eagerly from now on: {}",
                     captured.ToString());
        graphs_enabled_ = false;
      }
    }
    if (it != graphs_.end()) {
      RETURN_IF_CUDA_ERROR(cudaGraphLaunch(it->second, stream_), "replay the decode graph");
      ran = true;
    } else {
      if (graph_seen_.size() > 4 * kMaxGraphs) graph_seen_.clear();
      graph_seen_.insert(key);
    }
  }
  // One decode token alone: the persistent step kernel (decode_step.h).
  if (!ran && step_enabled_ && T == 1 && num_decode_ == 1 && R <= 1) {
    RETURN_IF_ERROR(RunDecodeStep(R == 1));
    ran = true;
  }
  if (!ran) RETURN_IF_ERROR(RunNetwork(T, std::min(R, kLogitsChunkRows)));

  // ---- logits of the requested rows (chunk 0 computed above): host rows
  // copied out, sampled rows drawn on the device ----
  const int64_t num_sampled = static_cast<int64_t>(sample_params.size());
  if (num_sampled > 0 && sample_out_.bytes() < num_sampled * sizeof(DeviceSampleResult)) {
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_), "grow the sampling buffers");
    const size_t bytes = std::max<size_t>(num_sampled * 2, 64) * sizeof(DeviceSampleResult);
    RETURN_IF_ERROR(sample_out_.Allocate(bytes, "sampled tokens"));
    RETURN_IF_ERROR(sample_out_host_.Allocate(bytes, "sampled tokens"));
  }
  out->logits.resize(static_cast<size_t>(host_rows) * c.vocab_size);
  for (int64_t r0 = 0; r0 < R; r0 += kLogitsChunkRows) {
    const int64_t n = std::min(kLogitsChunkRows, R - r0);
    if (r0 > 0) RETURN_IF_ERROR(RunLogits(r0, n));
    const int64_t host_n = std::clamp<int64_t>(host_rows - r0, 0, n);
    if (host_n < n) {  // sampled rows [r0 + host_n, r0 + n)
      const int64_t k0 = r0 + host_n - host_rows;
      const auto* params =
          reinterpret_cast<const DeviceSampleParams*>(meta_.as<int32_t>() + meta_at_.sample) + k0;
      RETURN_IF_CUDA_ERROR(
          LaunchSample(logits_.as<float>(), c.vocab_size, params, static_cast<int32_t>(n - host_n),
                       c.vocab_size, sample_out_.as<DeviceSampleResult>() + k0, stream_),
          "sampling kernel");
    }
    if (host_n == 0) continue;
    const size_t bytes = static_cast<size_t>(host_n) * c.vocab_size * 4;
    RETURN_IF_CUDA_ERROR(cudaMemcpyAsync(logits_host_.as<void>(), logits_.as<void>(), bytes,
                                         cudaMemcpyDeviceToHost, stream_),
                         "copy logits to the host");
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_), "run the forward pass");
    CopyOut(out->logits.data() + r0 * c.vocab_size, logits_host_.as<void>(), bytes);
    profile_.Mark(StageProfile::kLogitsCopy, stream_);
  }
  out->sampled.assign(batch.sequences.size(), SampledToken{});
  if (num_sampled > 0) {
    RETURN_IF_CUDA_ERROR(
        cudaMemcpyAsync(sample_out_host_.as<void>(), sample_out_.as<void>(),
                        num_sampled * sizeof(DeviceSampleResult), cudaMemcpyDeviceToHost, stream_),
        "copy sampled tokens to the host");
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_), "sample on the device");
    const auto* res = sample_out_host_.as<DeviceSampleResult>();
    for (int64_t k = 0; k < num_sampled; ++k) {
      out->sampled[sample_seqs[k]] = {res[k].token, res[k].logprob, res[k].rank};
    }
  }
  // Without logits the KV writes must still be complete when we return
  // (ReadKvBlocks runs on another stream).
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream_), "run the forward pass");
  profile_.Collect(/*decode_only=*/num_tiles_ == 0);
  return OkStatus();
}

Status CudaBackend::RunNetwork(int64_t T, int64_t logit_rows) {
  const ModelConfig& c = config_;
  scratch_used_ = T;
  const int32_t* dm = meta_.as<int32_t>();
  RETURN_IF_CUDA_ERROR(LaunchEmbed(dm + meta_at_.ids, embed_, static_cast<int32_t>(T),
                                   c.hidden_size, x_.as<float>(), stream_),
                       "embedding kernel");
  RETURN_IF_CUDA_ERROR(LaunchRopeTables(dm + meta_at_.positions, inv_freq_.as<float>(),
                                        static_cast<int32_t>(T), c.head_dim / 2, cos_.as<float>(),
                                        sin_.as<float>(), stream_),
                       "RoPE table kernel");
  profile_.Mark(StageProfile::kEmbed, stream_);
  for (int l = 0; l < c.num_layers; ++l) {
    RETURN_IF_ERROR(RunLayer(l, T, num_tiles_ > 0, num_decode_ > 0));
  }
  return logit_rows > 0 ? RunLogits(0, logit_rows) : OkStatus();
}

Status CudaBackend::RunLogits(int64_t r0, int64_t n) {
  const ModelConfig& c = config_;
  // The last down_proj output is still to be added when it has a bias
  // (otherwise its GEMM or GEMV added it to the residual stream).
  const bool pending = DeltaPending(scratch_used_);
  RETURN_IF_CUDA_ERROR(
      LaunchAddRmsNorm(x_.as<float>(), pending ? delta_.as<float>() : nullptr,
                       pending ? layers_.back().down_bias : nullptr, final_norm_,
                       meta_.as<int32_t>() + meta_at_.rows + r0, static_cast<int32_t>(n),
                       c.hidden_size, static_cast<float>(c.rms_norm_eps), xn_.as<bf16_t>(),
                       stream_),
      "final norm kernel");
  RETURN_IF_ERROR(Gemm(xn_.as<bf16_t>(), n, c.hidden_size, lm_head_, c.vocab_size,
                       logits_.as<float>(), GemmOut::kF32, "lm_head"));
  profile_.Mark(StageProfile::kLogits, stream_);
  return OkStatus();
}

Status CudaBackend::Capture(int64_t T, int64_t R, cudaGraphExec_t* exec) {
  RETURN_IF_CUDA_ERROR(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal),
                       "begin graph capture");
  Status run = RunNetwork(T, R);
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
  RETURN_IF_ERROR(run);
  RETURN_IF_CUDA_ERROR(end, "end graph capture");
  const cudaError_t inst = cudaGraphInstantiate(exec, graph, 0);
  cudaGraphDestroy(graph);
  RETURN_IF_CUDA_ERROR(inst, "instantiate the decode graph");
  return OkStatus();
}

void CudaBackend::DropGraphs() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
  graph_seen_.clear();
}

Status CudaBackend::RunLayer(int l, int64_t T, bool has_prefill, bool has_decode) {
  const ModelConfig& c = config_;
  const DeviceLayer& w = layers_[l];
  const int32_t H = c.hidden_size, D = c.head_dim, I = c.intermediate_size;
  const int32_t QD = c.num_heads * D, KD = c.num_kv_heads * D;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int32_t Ti = static_cast<int32_t>(T);
  const int32_t* dm = meta_.as<int32_t>();
  const bool fused = FusedDecode(T);
  // A batch of prompt chunks only (no decode items, whose attention reads
  // float32 q): q/k/v leave their GEMM as bf16.
  const bool bf16_qkv = !fused && has_prefill && !has_decode;

  // Input norm: fused into the q/k/v GEMV for decode sizes (the residual is
  // already in x_ then), else residual add + norm, then a GEMM.
  if (fused) {
    GemvArgs g;
    g.input = GemvInput::kNormF32;
    g.x = x_.as<float>();
    g.norm = w.input_norm;
    g.eps = eps;
    g.w = w.qkv;
    g.y = qkv_.as<float>();
    g.T = Ti;
    g.K = H;
    g.N = QD + 2 * KD;
    RETURN_IF_CUDA_ERROR(LaunchGemv(g, stream_), "q/k/v GEMV");
  } else {
    // The previous down_proj output is still in delta_ only when it has a
    // bias; otherwise its GEMM added it to the residual stream.
    const bool pending = l > 0 && layers_[l - 1].down_bias != nullptr;
    RETURN_IF_CUDA_ERROR(
        LaunchAddRmsNorm(x_.as<float>(), pending ? delta_.as<float>() : nullptr,
                         pending ? layers_[l - 1].down_bias : nullptr, w.input_norm, nullptr, Ti,
                         H, eps, xn_.as<bf16_t>(), stream_),
        "input norm kernel");
    profile_.Mark(StageProfile::kNorm, stream_);
    RETURN_IF_ERROR(Gemm(xn_.as<bf16_t>(), T, H, w.qkv, QD + 2 * KD, qkv_.as<void>(),
                         bf16_qkv ? GemmOut::kBf16 : GemmOut::kF32, "q/k/v"));
  }
  profile_.Mark(StageProfile::kQkv, stream_);
  QkvPrologueArgs pa{qkv_.as<float>(), w.qkv_bias, w.q_norm, w.k_norm,
                     cos_.as<float>(),  sin_.as<float>(), dm + meta_at_.slots,
                     kv_pool_.as<bf16_t>(), Ti, c.num_heads, c.num_kv_heads, D,
                     layout_.block_size, c.num_layers, l, eps};
  if (bf16_qkv) {
    // q goes to attention as bf16 through attn_ (each attention block reads
    // its q rows before it writes its output rows there).
    RETURN_IF_CUDA_ERROR(
        LaunchQkvPrologueBf16(pa, qkv_.as<bf16_t>(), attn_.as<bf16_t>(), stream_),
        "q/k/v prologue kernel");
  } else {
    RETURN_IF_CUDA_ERROR(LaunchQkvPrologue(pa, stream_), "q/k/v prologue kernel");
  }
  profile_.Mark(StageProfile::kPrologue, stream_);

  AttentionArgs aa{qkv_.as<float>(), QD + 2 * KD, bf16_qkv ? attn_.as<bf16_t>() : nullptr,
                   kv_pool_.as<bf16_t>(), dm + meta_at_.tables,
                   attn_.as<bf16_t>(), c.num_heads, c.num_kv_heads, D, layout_.block_size,
                   c.num_layers, l, static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)))};
  if (has_prefill) {
    RETURN_IF_CUDA_ERROR(
        LaunchPrefillAttention(aa, reinterpret_cast<const PrefillTile*>(dm + meta_at_.tiles),
                               num_tiles_, stream_),
        "prefill attention kernel");
    profile_.Mark(StageProfile::kPrefillAttention, stream_);
  }
  if (has_decode) {
    RETURN_IF_CUDA_ERROR(
        LaunchDecodeAttention(aa, reinterpret_cast<const DecodeItem*>(dm + meta_at_.decode),
                              num_decode_, splits_, split_len_, partial_.as<float>(),
                              split_counters_.as<int32_t>(), stream_),
        "decode attention kernel");
    profile_.Mark(StageProfile::kDecodeAttention, stream_);
  }

  if (fused) {
    // o_proj adds straight into the residual stream; the post-attention
    // norm rides on the gate/up GEMV; SwiGLU on the down GEMV, which adds
    // into the residual stream as well.
    GemvArgs o;
    o.x = attn_.as<bf16_t>();
    o.w = w.o;
    o.bias = w.o_bias;
    o.y = x_.as<float>();
    o.accumulate = true;
    o.T = Ti;
    o.K = QD;
    o.N = H;
    RETURN_IF_CUDA_ERROR(LaunchGemv(o, stream_), "o_proj GEMV");
    profile_.Mark(StageProfile::kOProj, stream_);
    GemvArgs gu;
    gu.input = GemvInput::kNormF32;
    gu.x = x_.as<float>();
    gu.norm = w.post_norm;
    gu.eps = eps;
    gu.w = w.gate_up;
    gu.y = gu_.as<float>();
    gu.T = Ti;
    gu.K = H;
    gu.N = 2 * I;
    RETURN_IF_CUDA_ERROR(LaunchGemv(gu, stream_), "gate/up GEMV");
    profile_.Mark(StageProfile::kGateUp, stream_);
    GemvArgs down;
    down.input = GemvInput::kSwiGlu;
    down.x = gu_.as<float>();
    if (w.gate_up_bias) {  // biases go in before the activation: no fusion
      RETURN_IF_CUDA_ERROR(
          LaunchSwiGlu(gu_.as<float>(), w.gate_up_bias, Ti, I, act_.as<bf16_t>(), stream_),
          "SwiGLU kernel");
      down.input = GemvInput::kBf16;
      down.x = act_.as<bf16_t>();
    }
    down.w = w.down;
    down.bias = w.down_bias;
    down.y = x_.as<float>();
    down.accumulate = true;
    down.T = Ti;
    down.K = I;
    down.N = H;
    RETURN_IF_CUDA_ERROR(LaunchGemv(down, stream_), "down_proj GEMV");
    profile_.Mark(StageProfile::kDown, stream_);
    return OkStatus();
  }

  // o_proj adds into the residual stream in its epilogue (no bias), so the
  // norm after it reads x once.
  if (w.o_bias == nullptr) {
    RETURN_IF_ERROR(
        Gemm(attn_.as<bf16_t>(), T, QD, w.o, H, x_.as<float>(), GemmOut::kF32Add, "o_proj"));
  } else {
    RETURN_IF_ERROR(
        Gemm(attn_.as<bf16_t>(), T, QD, w.o, H, delta_.as<float>(), GemmOut::kF32, "o_proj"));
  }
  profile_.Mark(StageProfile::kOProj, stream_);
  RETURN_IF_CUDA_ERROR(
      LaunchAddRmsNorm(x_.as<float>(), w.o_bias ? delta_.as<float>() : nullptr, w.o_bias,
                       w.post_norm, nullptr, Ti, H, eps, xn_.as<bf16_t>(), stream_),
      "post-attention norm kernel");
  profile_.Mark(StageProfile::kNorm, stream_);
  // gate/up leave their GEMM as bf16 (half the bytes for SwiGLU to read).
  RETURN_IF_ERROR(Gemm(xn_.as<bf16_t>(), T, H, w.gate_up, 2 * I, gu_.as<void>(), GemmOut::kBf16,
                       "gate/up"));
  profile_.Mark(StageProfile::kGateUp, stream_);
  RETURN_IF_CUDA_ERROR(
      LaunchSwiGluBf16(gu_.as<bf16_t>(), w.gate_up_bias, Ti, I, act_.as<bf16_t>(), stream_),
      "SwiGLU kernel");
  profile_.Mark(StageProfile::kSwiGlu, stream_);
  if (w.down_bias == nullptr) {
    RETURN_IF_ERROR(
        Gemm(act_.as<bf16_t>(), T, I, w.down, H, x_.as<float>(), GemmOut::kF32Add, "down_proj"));
  } else {  // added with its bias by the next norm (DeltaPending)
    RETURN_IF_ERROR(
        Gemm(act_.as<bf16_t>(), T, I, w.down, H, delta_.as<float>(), GemmOut::kF32, "down_proj"));
  }
  profile_.Mark(StageProfile::kDown, stream_);
  return OkStatus();
}

bool CudaBackend::DeltaPending(int64_t T) const {
  return !FusedDecode(T) && layers_.back().down_bias != nullptr;
}

bool CudaBackend::FusedDecode(int64_t T) const {
  const ModelConfig& c = config_;
  return T <= kGemvMaxRows && c.hidden_size % 8 == 0 && c.intermediate_size % 8 == 0 &&
         (c.num_heads * c.head_dim) % 8 == 0;
}

}  // namespace crescent::model::cuda
