// CudaBackend: loading (weights to bf16 device arenas), memory sizing, and
// KV block copies between the device pool and host buffers. The forward
// pass is in cuda_forward.cc.
#include "model/cuda/cuda_backend.h"

#include <algorithm>
#include <cstring>

#include "common/logging.h"
#include "model/backend_internal.h"
#include "model/cuda/backend_impl.h"
#include "model/cuda/cublas_loader.h"
#include "model/cuda/cuda_util.h"
#include "model/rope.h"
#include "model/weights.h"

namespace crescent::model::cuda {
namespace {

// Pinned staging for KV copies from/to pageable host memory: two halves so
// that the DMA of one piece overlaps the host memcpy of the other.
constexpr size_t kKvStagingBytes = 16u << 20;
constexpr size_t kCublasWorkspaceBytes = 32u << 20;
constexpr size_t kArenaAlign = 256;

size_t Align(size_t n) { return (n + kArenaAlign - 1) / kArenaAlign * kArenaAlign; }

}  // namespace

Status CudaStatus(cudaError_t err, const std::string& what) {
  const std::string msg = "CUDA: " + what + ": " + cudaGetErrorString(err) + " (" +
                          cudaGetErrorName(err) + ")";
  if (err == cudaErrorMemoryAllocation) {
    return ResourceExhaustedError(msg + "; lower --gpu-memory-utilization or the KV cache size");
  }
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver ||
      err == cudaErrorInitializationError) {
    return UnavailableError(msg + "; is an NVIDIA GPU and driver present? use --device cpu");
  }
  return InternalError(msg);
}

Status CublasStatus(cublasStatus_t err, const std::string& what) {
  const std::string msg =
      "cuBLAS: " + what + ": " + cublasGetStatusString(err) + " (" + std::to_string(err) + ")";
  if (err == CUBLAS_STATUS_ALLOC_FAILED) return ResourceExhaustedError(msg);
  if (std::string load = CublasLoadError(); !load.empty()) {
    return UnavailableError(msg + ": " + load);
  }
  return InternalError(msg);
}

bool DeviceAvailable() {
  static const bool available = [] {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  }();
  return available;
}

// ---------------------------------------------------------------- buffers

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    Reset();
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

Status DeviceBuffer::Allocate(size_t bytes, const std::string& what) {
  Reset();
  RETURN_IF_CUDA_ERROR(cudaMalloc(&ptr_, std::max<size_t>(bytes, 1)),
                       "allocate " + std::to_string(bytes) + " bytes for " + what);
  bytes_ = bytes;
  return OkStatus();
}

void DeviceBuffer::Reset() {
  if (ptr_) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

Status PinnedBuffer::Allocate(size_t bytes, const std::string& what) {
  Reset();
  RETURN_IF_CUDA_ERROR(cudaMallocHost(&ptr_, std::max<size_t>(bytes, 1)),
                       "allocate " + std::to_string(bytes) + " pinned host bytes for " + what);
  bytes_ = bytes;
  return OkStatus();
}

void PinnedBuffer::Reset() {
  if (ptr_) cudaFreeHost(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

// ---------------------------------------------------------------- loading

CudaBackend::CudaBackend(ModelConfig config, std::string fingerprint)
    : config_(std::move(config)), fingerprint_(std::move(fingerprint)) {}

CudaBackend::~CudaBackend() {
  if (stream_) cudaStreamSynchronize(stream_);
  PrintStepTrace();
  for (cudaEvent_t e : step_events_)
    if (e) cudaEventDestroy(e);
  DropGraphs();
  for (void* p : registered_) cudaHostUnregister(p);
  if (kv_stream_) cudaStreamSynchronize(kv_stream_);
  for (cudaEvent_t e : kv_events_)
    if (e) cudaEventDestroy(e);
  if (cublas_) cublasDestroy(cublas_);
  if (stream_) cudaStreamDestroy(stream_);
  if (kv_stream_) cudaStreamDestroy(kv_stream_);
}

Status CudaBackend::Init(const Checkpoint& checkpoint, const BackendOptions& options) {
  const ModelConfig& c = config_;
  const int32_t group = c.num_heads / c.num_kv_heads;
  if (!DecodeAttentionSupports(c.head_dim, group)) {
    return UnimplementedError("CUDA backend: head_dim " + std::to_string(c.head_dim) + " with " +
                              std::to_string(group) +
                              " query heads per KV head is not supported (head_dim 8, 16, 32, "
                              "64, 128 or 256; at most 8 query heads per KV head)");
  }
  int device = 0;
  RETURN_IF_CUDA_ERROR(cudaGetDevice(&device), "select a device");
  RETURN_IF_CUDA_ERROR(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, device),
                       "read the multiprocessor count");
  RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                       "create the compute stream");
  RETURN_IF_CUDA_ERROR(cudaStreamCreateWithFlags(&kv_stream_, cudaStreamNonBlocking),
                       "create the KV copy stream");
  for (cudaEvent_t& e : kv_events_) {
    RETURN_IF_CUDA_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming),
                         "create a KV copy event");
  }
  RETURN_IF_CUBLAS_ERROR(cublasCreate(&cublas_), "create a handle");
  RETURN_IF_CUBLAS_ERROR(cublasSetStream(cublas_, stream_), "set the stream");
  RETURN_IF_ERROR(cublas_workspace_.Allocate(kCublasWorkspaceBytes, "the cuBLAS workspace"));
  RETURN_IF_CUBLAS_ERROR(
      cublasSetWorkspace(cublas_, cublas_workspace_.as<void>(), cublas_workspace_.bytes()),
      "set the workspace");
  RETURN_IF_ERROR(gemm_.Init(stream_, cublas_workspace_.as<void>(), cublas_workspace_.bytes()));

  graphs_enabled_ = options.cuda_graphs;
  RETURN_IF_ERROR(UploadWeights(checkpoint));
  const std::vector<float> inv_freq = RopeInverseFrequencies(config_);
  RETURN_IF_ERROR(inv_freq_.Allocate(inv_freq.size() * 4, "RoPE frequencies"));
  RETURN_IF_CUDA_ERROR(cudaMemcpy(inv_freq_.as<void>(), inv_freq.data(), inv_freq.size() * 4,
                                  cudaMemcpyHostToDevice),
                       "upload RoPE frequencies");
  RETURN_IF_ERROR(EnsureScratch(std::max<int32_t>(options.max_num_batched_tokens, 1)));
  RETURN_IF_ERROR(InitDecodeStep());
  RETURN_IF_ERROR(kv_staging_.Allocate(kKvStagingBytes, "KV copy staging"));
  return SizeKvPool(options);
}

Status CudaBackend::UploadWeights(const Checkpoint& checkpoint) {
  ASSIGN_OR_RETURN(ModelWeights w, BindWeights(checkpoint, config_));
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const int64_t QD = int64_t{c.num_heads} * D, KD = int64_t{c.num_kv_heads} * D;
  const int64_t V = c.vocab_size;

  // Arena offsets (elements) first, then one allocation each.
  size_t mat_bytes = 0, vec_bytes = 0;
  auto mat = [&](int64_t elements) {
    const size_t at = mat_bytes;
    mat_bytes += Align(static_cast<size_t>(elements) * 2);
    return at;
  };
  auto vec = [&](int64_t elements) {
    const size_t at = vec_bytes;
    vec_bytes += Align(static_cast<size_t>(elements) * 4);
    return at;
  };
  struct Pending {  // one tensor's destination
    const TensorView* t;
    size_t offset;
    bool matrix;
  };
  std::vector<Pending> uploads;
  struct LayerOffsets {
    size_t qkv, o, gu, down, in_norm, post_norm, q_norm, k_norm, qkv_bias, o_bias, gu_bias,
        down_bias;
  };
  std::vector<LayerOffsets> offs(c.num_layers);
  const size_t embed_at = mat(V * H);
  uploads.push_back({w.embed, embed_at, true});
  size_t lm_at = embed_at;
  if (!c.tie_word_embeddings) {
    lm_at = mat(V * H);
    uploads.push_back({w.lm_head, lm_at, true});
  }
  const size_t final_norm_at = vec(H);
  uploads.push_back({w.final_norm, final_norm_at, false});
  constexpr size_t kNone = ~size_t{0};
  for (int l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w.layers[l];
    LayerOffsets& o = offs[l];
    o.qkv = mat((QD + 2 * KD) * H);
    uploads.push_back({lw.q_proj, o.qkv, true});
    uploads.push_back({lw.k_proj, o.qkv + QD * H * 2, true});
    uploads.push_back({lw.v_proj, o.qkv + (QD + KD) * H * 2, true});
    o.o = mat(H * QD);
    uploads.push_back({lw.o_proj, o.o, true});
    o.gu = mat(2 * I * H);
    uploads.push_back({lw.gate_proj, o.gu, true});
    uploads.push_back({lw.up_proj, o.gu + I * H * 2, true});
    o.down = mat(H * I);
    uploads.push_back({lw.down_proj, o.down, true});
    o.in_norm = vec(H);
    uploads.push_back({lw.input_norm, o.in_norm, false});
    o.post_norm = vec(H);
    uploads.push_back({lw.post_norm, o.post_norm, false});
    o.q_norm = o.k_norm = o.qkv_bias = o.o_bias = o.gu_bias = o.down_bias = kNone;
    if (lw.q_norm) {
      o.q_norm = vec(D);
      uploads.push_back({lw.q_norm, o.q_norm, false});
      o.k_norm = vec(D);
      uploads.push_back({lw.k_norm, o.k_norm, false});
    }
    if (lw.q_bias) {
      o.qkv_bias = vec(QD + 2 * KD);
      uploads.push_back({lw.q_bias, o.qkv_bias, false});
      uploads.push_back({lw.k_bias, o.qkv_bias + QD * 4, false});
      uploads.push_back({lw.v_bias, o.qkv_bias + (QD + KD) * 4, false});
    }
    if (lw.o_bias) {
      o.o_bias = vec(H);
      uploads.push_back({lw.o_bias, o.o_bias, false});
    }
    if (lw.gate_bias) {
      o.gu_bias = vec(2 * I);
      uploads.push_back({lw.gate_bias, o.gu_bias, false});
      uploads.push_back({lw.up_bias, o.gu_bias + I * 4, false});
      o.down_bias = vec(H);
      uploads.push_back({lw.down_bias, o.down_bias, false});
    }
  }
  RETURN_IF_ERROR(matrices_.Allocate(mat_bytes, "bf16 weights"));
  RETURN_IF_ERROR(vectors_.Allocate(vec_bytes, "norm weights and biases"));

  // Matrices go up as bf16 (converted on the host when stored otherwise),
  // vectors as float32.
  std::vector<uint16_t> bf16;
  for (const Pending& p : uploads) {
    char* base = p.matrix ? matrices_.as<char>() : vectors_.as<char>();
    const void* src = p.t->data;
    size_t bytes = p.t->bytes;
    std::vector<float> widened;
    if (p.matrix && p.t->dtype != DType::kBF16) {
      widened = ToFloat(*p.t);
      bf16.resize(widened.size());
      for (size_t i = 0; i < widened.size(); ++i) bf16[i] = FloatToBF16(widened[i]);
      src = bf16.data();
      bytes = bf16.size() * 2;
    } else if (!p.matrix) {
      widened = ToFloat(*p.t);
      src = widened.data();
      bytes = widened.size() * 4;
    }
    RETURN_IF_CUDA_ERROR(cudaMemcpy(base + p.offset, src, bytes, cudaMemcpyHostToDevice),
                         "upload weights");
  }
  auto M = [&](size_t at) { return reinterpret_cast<const bf16_t*>(matrices_.as<char>() + at); };
  auto F = [&](size_t at) {
    return at == kNone ? nullptr : reinterpret_cast<const float*>(vectors_.as<char>() + at);
  };
  embed_ = M(embed_at);
  lm_head_ = M(lm_at);
  final_norm_ = F(final_norm_at);
  for (const LayerOffsets& o : offs) {
    layers_.push_back({M(o.qkv), M(o.o), M(o.gu), M(o.down), F(o.in_norm), F(o.post_norm),
                       F(o.q_norm), F(o.k_norm), F(o.qkv_bias), F(o.o_bias), F(o.gu_bias),
                       F(o.down_bias)});
  }
  return OkStatus();
}

Status CudaBackend::SizeKvPool(const BackendOptions& options) {
  layout_ = {config_.num_layers, config_.num_kv_heads, config_.head_dim, options.kv_block_size,
             KvDtype::kBFloat16};
  const uint64_t block_bytes = layout_.BlockBytes();
  uint64_t pool_bytes = options.kv_cache_bytes;
  std::string source = "kv_cache_bytes " + std::to_string(options.kv_cache_bytes);
  if (options.num_kv_blocks > 0) {
    pool_bytes = uint64_t{static_cast<uint32_t>(options.num_kv_blocks)} * block_bytes;
    source = "num_kv_blocks";
  } else if (options.gpu_memory_utilization > 0) {
    size_t free_bytes = 0, total_bytes = 0;
    RETURN_IF_CUDA_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes), "read free device memory");
    const double budget = options.gpu_memory_utilization * static_cast<double>(total_bytes) -
                          static_cast<double>(total_bytes - free_bytes);
    pool_bytes = budget > 0 ? static_cast<uint64_t>(budget) : 0;
    source = "gpu_memory_utilization " + std::to_string(options.gpu_memory_utilization) + " of " +
             std::to_string(total_bytes >> 20) + " MiB (" + std::to_string(free_bytes >> 20) +
             " MiB free after weights and activations)";
  }
  const uint64_t blocks = std::min<uint64_t>(pool_bytes / block_bytes, INT32_MAX);
  if (blocks == 0) {
    return ResourceExhaustedError("CUDA backend: " + source + " holds no KV block of " +
                                  std::to_string(block_bytes) +
                                  " bytes; raise it or set num_kv_blocks");
  }
  num_blocks_ = static_cast<int32_t>(blocks);
  RETURN_IF_ERROR(kv_pool_.Allocate(blocks * block_bytes, "the KV pool (" + source + ")"));
  spdlog::info("cuda backend: {} KV blocks of {} tokens ({:.1f} MiB, {})", num_blocks_,
                    layout_.block_size, blocks * block_bytes / 1048576.0, layout_.Tag());
  return OkStatus();
}

// ---------------------------------------------------------------- KV copies

Status CudaBackend::ReadKvBlocks(std::span<const int32_t> blocks,
                                 std::span<std::byte> bytes) const {
  RETURN_IF_ERROR(CheckKvBlockList(blocks, bytes.size(), layout_, num_blocks_));
  return CopyKv(blocks, bytes.data(), bytes.size(), /*to_host=*/true);
}

Status CudaBackend::WriteKvBlocks(std::span<const int32_t> blocks,
                                  std::span<const std::byte> bytes) {
  RETURN_IF_ERROR(CheckKvBlockList(blocks, bytes.size(), layout_, num_blocks_));
  return CopyKv(blocks, const_cast<std::byte*>(bytes.data()), bytes.size(), /*to_host=*/false);
}

Status CudaBackend::RegisterHostBuffer(std::span<std::byte> buffer) {
  if (buffer.empty()) return OkStatus();
  std::lock_guard<std::mutex> lock(kv_mu_);
  RETURN_IF_CUDA_ERROR(cudaHostRegister(buffer.data(), buffer.size(), cudaHostRegisterDefault),
                       "page-lock a " + std::to_string(buffer.size()) + "-byte KV host buffer");
  registered_.push_back(buffer.data());
  return OkStatus();
}

Status CudaBackend::UnregisterHostBuffer(std::span<std::byte> buffer) {
  std::lock_guard<std::mutex> lock(kv_mu_);
  auto it = std::find(registered_.begin(), registered_.end(), buffer.data());
  if (it == registered_.end()) {
    return NotFoundError("KV host buffer was not registered with RegisterHostBuffer");
  }
  registered_.erase(it);
  RETURN_IF_CUDA_ERROR(cudaHostUnregister(buffer.data()), "unregister a KV host buffer");
  return OkStatus();
}

Status CudaBackend::CopyKv(std::span<const int32_t> blocks, std::byte* host, size_t bytes,
                           bool to_host) const {
  if (blocks.empty()) return OkStatus();
  std::lock_guard<std::mutex> lock(kv_mu_);
  const size_t bb = layout_.BlockBytes();
  char* pool = kv_pool_.as<char>();
  cudaPointerAttributes attr{};
  const bool pinned = cudaPointerGetAttributes(&attr, host) == cudaSuccess &&
                      attr.type == cudaMemoryTypeHost;
  cudaGetLastError();  // a pageable pointer may leave an error behind on old drivers
  const char* what = to_host ? "copy KV blocks to the host" : "copy KV blocks to the device";
  if (pinned) {  // DMA straight between the pool and the caller's buffer
    for (size_t i = 0; i < blocks.size(); ++i) {
      char* dev = pool + static_cast<size_t>(blocks[i]) * bb;
      RETURN_IF_CUDA_ERROR(to_host ? cudaMemcpyAsync(host + i * bb, dev, bb,
                                                     cudaMemcpyDeviceToHost, kv_stream_)
                                   : cudaMemcpyAsync(dev, host + i * bb, bb,
                                                     cudaMemcpyHostToDevice, kv_stream_),
                           what);
    }
    RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(kv_stream_), what);
    return OkStatus();
  }
  // Pageable: pieces of at most half the staging area, alternating halves;
  // the host memcpy of one piece overlaps the DMA of the next.
  const size_t piece_max = kv_staging_.bytes() / 2;
  struct Piece {
    size_t host_off;
    char* dev;
    size_t n;
  };
  std::vector<Piece> pieces;
  for (size_t i = 0; i < blocks.size(); ++i) {
    char* dev = pool + static_cast<size_t>(blocks[i]) * bb;
    for (size_t off = 0; off < bb; off += piece_max) {
      pieces.push_back({i * bb + off, dev + off, std::min(piece_max, bb - off)});
    }
  }
  char* staging = kv_staging_.as<char>();
  auto issue = [&](size_t k) -> Status {
    const Piece& p = pieces[k];
    char* half = staging + (k % 2) * piece_max;
    if (to_host) {
      RETURN_IF_CUDA_ERROR(
          cudaMemcpyAsync(half, p.dev, p.n, cudaMemcpyDeviceToHost, kv_stream_), what);
    } else {
      std::memcpy(half, host + p.host_off, p.n);
      RETURN_IF_CUDA_ERROR(
          cudaMemcpyAsync(p.dev, half, p.n, cudaMemcpyHostToDevice, kv_stream_), what);
    }
    RETURN_IF_CUDA_ERROR(cudaEventRecord(kv_events_[k % 2], kv_stream_), what);
    return OkStatus();
  };
  RETURN_IF_ERROR(issue(0));
  for (size_t k = 0; k < pieces.size(); ++k) {
    // Piece k+1 reuses the other half: wait until its previous user (k-1) is done.
    if (k + 1 < pieces.size()) {
      if (k >= 1) RETURN_IF_CUDA_ERROR(cudaEventSynchronize(kv_events_[(k + 1) % 2]), what);
      RETURN_IF_ERROR(issue(k + 1));
    }
    if (to_host) {
      RETURN_IF_CUDA_ERROR(cudaEventSynchronize(kv_events_[k % 2]), what);
      std::memcpy(host + pieces[k].host_off, staging + (k % 2) * piece_max, pieces[k].n);
    }
  }
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(kv_stream_), what);
  return OkStatus();
}

StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(std::unique_ptr<Checkpoint> checkpoint,
                                                     const ModelConfig& config,
                                                     std::string_view config_text,
                                                     const BackendOptions& options) {
  if (!DeviceAvailable()) {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    return err != cudaSuccess ? CudaStatus(err, "find a GPU")
                              : UnavailableError("CUDA: no GPU found; use --device cpu");
  }
  auto backend =
      std::make_unique<CudaBackend>(config, ModelFingerprint(*checkpoint, config_text));
  RETURN_IF_ERROR(backend->Init(*checkpoint, options));
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace crescent::model::cuda
