#include "model/cpu/cpu_backend.h"

#include <cblas.h>
#include <immintrin.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/logging.h"
#include "model/backend_internal.h"
#include "model/cpu/attention.h"
#include "model/cpu/kernels.h"
#include "model/cpu/thread_pool.h"
#include "model/rope.h"
#include "model/weights.h"

namespace crescent::model::cpu {
namespace {

// Wall time per stage of the forward pass, printed to stderr at exit when
// CRESCENT_PROFILE is set (to see where a benchmark's time goes).
enum Stage {
  kEmbed,
  kNorm,
  kQkv,
  kRopeKv,
  kAttention,
  kOProj,
  kGateUp,
  kSilu,
  kDown,
  kLmHead,
  kNumStages
};
constexpr const char* kStageNames[kNumStages] = {
    "embed+rope", "norm+residual", "qkv",  "qk-norm+rope+kv", "attention", "o_proj",
    "gate+up",    "silu",          "down", "lm_head"};
class StageTimer {
 public:
  StageTimer() : enabled_(std::getenv("CRESCENT_PROFILE") != nullptr) {}
  ~StageTimer() {
    if (!enabled_) return;
    double total = 0;
    for (double t : seconds_) total += t;
    for (int i = 0; i < kNumStages; ++i) {
      std::fprintf(stderr, "profile: %-18s %8.3f s %5.1f%%\n", kStageNames[i], seconds_[i],
                   total > 0 ? 100 * seconds_[i] / total : 0.0);
    }
  }
  // Runs fn, charging its wall time to `stage`.
  template <typename Fn>
  void Time(Stage stage, Fn&& fn) {
    if (!enabled_) return fn();
    auto t0 = std::chrono::steady_clock::now();
    fn();
    seconds_[stage] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

 private:
  bool enabled_;
  double seconds_[kNumStages] = {};
};

WeightMatrix Matrix(const TensorView* t) {
  return {t->dtype, t->data, t->shape[0], t->shape.size() > 1 ? t->shape[1] : 1};
}

std::vector<float> Floats(const TensorView* t) { return t ? ToFloat(*t) : std::vector<float>(); }
const float* Ptr(const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); }

// Float32 copies of the small per-layer vectors (norm weights, biases).
struct LayerVectors {
  std::vector<float> input_norm, post_norm, q_norm, k_norm;
  std::vector<float> q_bias, k_bias, v_bias, o_bias, gate_bias, up_bias, down_bias;
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(std::unique_ptr<Checkpoint> ckpt, ModelConfig config, ModelWeights weights,
             int num_threads)
      : ckpt_(std::move(ckpt)),
        config_(std::move(config)),
        weights_(std::move(weights)),
        pool_(num_threads) {}
  ~CpuBackend() override {
    if (kv_) ::munmap(kv_, kv_bytes_);
  }

  Status Init(const BackendOptions& options, std::string_view config_text) {
    layout_ = {config_.num_layers, config_.num_kv_heads, config_.head_dim, options.kv_block_size,
               KvDtype::kFloat32};
    num_blocks_ = options.num_kv_blocks > 0
                      ? options.num_kv_blocks
                      : static_cast<int32_t>(std::min<uint64_t>(
                            options.kv_cache_bytes / layout_.BlockBytes(), INT32_MAX));
    if (num_blocks_ <= 0) {
      return InvalidArgumentError("kv_cache_bytes " + std::to_string(options.kv_cache_bytes) +
                                  " holds no KV block of " + std::to_string(layout_.BlockBytes()) +
                                  " bytes; raise it or set num_kv_blocks");
    }
    kv_bytes_ = static_cast<size_t>(num_blocks_) * layout_.BlockBytes();
    void* p = ::mmap(nullptr, kv_bytes_, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
      return ErrnoToStatus(errno, "reserve KV pool of " + std::to_string(kv_bytes_) + " bytes");
    ::madvise(p, kv_bytes_, MADV_HUGEPAGE);
    kv_ = static_cast<float*>(p);
    for (const LayerWeights& lw : weights_.layers) {
      LayerVectors v;
      v.input_norm = Floats(lw.input_norm);
      v.post_norm = Floats(lw.post_norm);
      v.q_norm = Floats(lw.q_norm);
      v.k_norm = Floats(lw.k_norm);
      v.q_bias = Floats(lw.q_bias);
      v.k_bias = Floats(lw.k_bias);
      v.v_bias = Floats(lw.v_bias);
      v.o_bias = Floats(lw.o_bias);
      v.gate_bias = Floats(lw.gate_bias);
      v.up_bias = Floats(lw.up_bias);
      v.down_bias = Floats(lw.down_bias);
      layer_vectors_.push_back(std::move(v));
    }
    final_norm_ = Floats(weights_.final_norm);
    inv_freq_ = RopeInverseFrequencies(config_);
    fingerprint_ = ModelFingerprint(*ckpt_, config_text);
    return OkStatus();
  }

  const ModelConfig& config() const override { return config_; }
  const KvBlockLayout& kv_layout() const override { return layout_; }
  int32_t num_kv_blocks() const override { return num_blocks_; }
  const std::string& model_fingerprint() const override { return fingerprint_; }
  std::string_view name() const override { return "cpu"; }

  Status Forward(const ForwardBatch& batch, ForwardOutput* out) override;
  Status ReadKvBlocks(std::span<const int32_t> blocks, std::span<std::byte> bytes) const override;
  Status WriteKvBlocks(std::span<const int32_t> blocks, std::span<const std::byte> bytes) override;
  std::span<std::byte> HostKvPool() override {
    return {reinterpret_cast<std::byte*>(kv_),
            static_cast<size_t>(num_blocks_) * layout_.BlockBytes()};
  }

 private:
  Status Validate(const ForwardBatch& batch) const;
  Status CheckBlockList(std::span<const int32_t> blocks, size_t bytes) const;
  void RunLayer(int layer, int64_t T);

  // ---- constant after Init ----
  std::unique_ptr<Checkpoint> ckpt_;
  ModelConfig config_;
  ModelWeights weights_;
  std::vector<LayerVectors> layer_vectors_;
  std::vector<float> final_norm_;
  std::vector<float> inv_freq_;  // [D/2]
  KvBlockLayout layout_;
  int32_t num_blocks_ = 0;
  std::string fingerprint_;
  float* kv_ = nullptr;  // [num_blocks][BlockElements()]
  size_t kv_bytes_ = 0;
  ThreadPool pool_;
  StageTimer timer_;

  // ---- scratch of Forward (one Forward at a time); T = new tokens ----
  std::vector<AttentionToken> tokens_;  // [T]
  std::vector<int32_t> positions_;      // [T]
  std::vector<float> x_;                // [T][H] residual stream
  std::vector<float> xn_;               // [T][H] normalised
  std::vector<float> q_;                // [T][Hq*D]
  std::vector<float> k_, v_;            // [T][Hkv*D]
  std::vector<float> attn_;             // [T][Hq*D]
  std::vector<float> gate_, up_;        // [T][I]
  std::vector<float> tmp_;              // [T][H]
  std::vector<float> cos_, sin_;        // [T][D/2]
};

Status CpuBackend::Validate(const ForwardBatch& batch) const {
  return ValidateForwardBatch(batch, config_.vocab_size, layout_, num_blocks_);
}

// Sets FTZ/DAZ on the calling thread for a scope (see kFlushDenormals).
class FlushDenormalsScope {
 public:
  FlushDenormalsScope() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushDenormals); }
  ~FlushDenormalsScope() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
};

Status CpuBackend::Forward(const ForwardBatch& batch, ForwardOutput* out) {
  RETURN_IF_ERROR(Validate(batch));
  FlushDenormalsScope flush_denormals;
  const int64_t H = config_.hidden_size, D = config_.head_dim, half = D / 2;
  tokens_.clear();
  positions_.clear();
  std::vector<int32_t> ids;
  for (const SequenceInput& s : batch.sequences) {
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      const int32_t pos = s.position + static_cast<int32_t>(i);
      tokens_.push_back({pos, s.block_table});
      positions_.push_back(pos);
      ids.push_back(s.tokens[i]);
    }
  }
  const int64_t T = static_cast<int64_t>(tokens_.size());
  const int64_t QD = config_.num_heads * D, KD = config_.num_kv_heads * D;
  const int64_t I = config_.intermediate_size;
  x_.resize(T * H);
  xn_.resize(T * H);
  q_.resize(T * QD);
  k_.resize(T * KD);
  v_.resize(T * KD);
  attn_.resize(T * QD);
  gate_.resize(T * I);
  up_.resize(T * I);
  tmp_.resize(T * H);
  cos_.resize(T * half);
  sin_.resize(T * half);
  const TensorView* embed = weights_.embed;
  const size_t esize = DTypeSize(embed->dtype);
  timer_.Time(kEmbed, [&] {
    pool_.ParallelFor(T, 8, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) {
        WidenRow(embed->dtype, static_cast<const char*>(embed->data) + ids[t] * H * esize, H,
                 x_.data() + t * H);
        RopeCosSin(inv_freq_, positions_[t], cos_.data() + t * half, sin_.data() + t * half);
      }
    });
  });
  for (int l = 0; l < config_.num_layers; ++l) RunLayer(l, T);

  // Logits of the requested rows.
  out->vocab_size = config_.vocab_size;
  out->row_begin.assign(1, 0);
  std::vector<int64_t> rows;
  int64_t t0 = 0;
  for (const SequenceInput& s : batch.sequences) {
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    if (s.logits == LogitsMode::kAll) {
      for (int64_t i = 0; i < n; ++i) rows.push_back(t0 + i);
    } else if (s.logits == LogitsMode::kLast) {
      rows.push_back(t0 + n - 1);
    }
    out->row_begin.push_back(static_cast<int32_t>(rows.size()));
    t0 += n;
  }
  const int64_t R = static_cast<int64_t>(rows.size());
  out->logits.resize(static_cast<size_t>(R) * config_.vocab_size);
  if (R == 0) return OkStatus();
  timer_.Time(kLmHead, [&] {
    pool_.ParallelFor(R, 8, [&](int64_t b, int64_t e, int) {
      for (int64_t r = b; r < e; ++r) {
        RmsNorm(x_.data() + rows[r] * H, final_norm_.data(), H, config_.rms_norm_eps,
                xn_.data() + r * H);
      }
    });
    const MatMulTarget head{Matrix(weights_.lm_head), out->logits.data(), config_.vocab_size,
                            nullptr};
    MatMul(pool_, xn_.data(), R, H, {&head, 1});
  });
  return OkStatus();
}

void CpuBackend::RunLayer(int l, int64_t T) {
  const LayerWeights& lw = weights_.layers[l];
  const LayerVectors& lv = layer_vectors_[l];
  const int64_t H = config_.hidden_size, D = config_.head_dim, half = D / 2;
  const int64_t Hq = config_.num_heads, Hkv = config_.num_kv_heads;
  const int64_t QD = Hq * D, KD = Hkv * D, I = config_.intermediate_size;
  const double eps = config_.rms_norm_eps;

  timer_.Time(kNorm, [&] {
    pool_.ParallelFor(T, 8, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t)
        RmsNorm(x_.data() + t * H, lv.input_norm.data(), H, eps, xn_.data() + t * H);
    });
  });
  const MatMulTarget qkv[] = {
      {Matrix(lw.q_proj), q_.data(), QD, Ptr(lv.q_bias)},
      {Matrix(lw.k_proj), k_.data(), KD, Ptr(lv.k_bias)},
      {Matrix(lw.v_proj), v_.data(), KD, Ptr(lv.v_bias)},
  };
  timer_.Time(kQkv, [&] { MatMul(pool_, xn_.data(), T, H, qkv); });

  // q/k norm (Qwen3), RoPE, and the new K/V into the pool.
  timer_.Time(kRopeKv, [&] {
    pool_.ParallelFor(T, 4, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) {
        const float* c = cos_.data() + t * half;
        const float* s = sin_.data() + t * half;
        for (int64_t h = 0; h < Hq; ++h) {
          float* qh = q_.data() + t * QD + h * D;
          if (config_.qk_norm) RmsNorm(qh, lv.q_norm.data(), D, eps, qh);
          RopeApply(qh, static_cast<int>(D), c, s);
        }
        const int32_t pos = tokens_[t].position;
        const int32_t block = tokens_[t].block_table[pos / layout_.block_size];
        const int32_t slot = pos % layout_.block_size;
        float* block_base = kv_ + static_cast<size_t>(block) * layout_.BlockElements();
        for (int64_t g = 0; g < Hkv; ++g) {
          float* kh = k_.data() + t * KD + g * D;
          if (config_.qk_norm) RmsNorm(kh, lv.k_norm.data(), D, eps, kh);
          RopeApply(kh, static_cast<int>(D), c, s);
          std::memcpy(block_base + layout_.ElementOffset(l, kKvKindKey, g, slot), kh, D * 4);
          std::memcpy(block_base + layout_.ElementOffset(l, kKvKindValue, g, slot),
                      v_.data() + t * KD + g * D, D * 4);
        }
      }
    });
  });
  timer_.Time(kAttention, [&] {
    PagedAttention(pool_, tokens_, q_.data(), static_cast<int32_t>(Hq), layout_, kv_, l,
                   static_cast<float>(1.0 / std::sqrt(static_cast<double>(D))), attn_.data());
  });

  const MatMulTarget o{Matrix(lw.o_proj), tmp_.data(), H, Ptr(lv.o_bias)};
  timer_.Time(kOProj, [&] { MatMul(pool_, attn_.data(), T, QD, {&o, 1}); });
  timer_.Time(kNorm, [&] {
    pool_.ParallelFor(T, 8, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) {
        float* x = x_.data() + t * H;
        const float* a = tmp_.data() + t * H;
        for (int64_t i = 0; i < H; ++i) x[i] += a[i];
        RmsNorm(x, lv.post_norm.data(), H, eps, xn_.data() + t * H);
      }
    });
  });
  const MatMulTarget gate_up[] = {
      {Matrix(lw.gate_proj), gate_.data(), I, Ptr(lv.gate_bias)},
      {Matrix(lw.up_proj), up_.data(), I, Ptr(lv.up_bias)},
  };
  timer_.Time(kGateUp, [&] { MatMul(pool_, xn_.data(), T, H, gate_up); });
  timer_.Time(kSilu, [&] {
    pool_.ParallelFor(T, 4, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t)
        SiluMul(gate_.data() + t * I, up_.data() + t * I, I, gate_.data() + t * I);
    });
  });
  const MatMulTarget down{Matrix(lw.down_proj), tmp_.data(), H, Ptr(lv.down_bias)};
  timer_.Time(kDown, [&] { MatMul(pool_, gate_.data(), T, I, {&down, 1}); });
  timer_.Time(kNorm, [&] {
    pool_.ParallelFor(T, 8, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) {
        float* x = x_.data() + t * H;
        const float* a = tmp_.data() + t * H;
        for (int64_t i = 0; i < H; ++i) x[i] += a[i];
      }
    });
  });
}

Status CpuBackend::CheckBlockList(std::span<const int32_t> blocks, size_t bytes) const {
  return CheckKvBlockList(blocks, bytes, layout_, num_blocks_);
}

Status CpuBackend::ReadKvBlocks(std::span<const int32_t> blocks, std::span<std::byte> bytes) const {
  RETURN_IF_ERROR(CheckBlockList(blocks, bytes.size()));
  const size_t bb = layout_.BlockBytes();
  for (size_t i = 0; i < blocks.size(); ++i) {
    std::memcpy(bytes.data() + i * bb, reinterpret_cast<const char*>(kv_) + blocks[i] * bb, bb);
  }
  return OkStatus();
}

Status CpuBackend::WriteKvBlocks(std::span<const int32_t> blocks,
                                 std::span<const std::byte> bytes) {
  RETURN_IF_ERROR(CheckBlockList(blocks, bytes.size()));
  const size_t bb = layout_.BlockBytes();
  for (size_t i = 0; i < blocks.size(); ++i) {
    std::memcpy(reinterpret_cast<char*>(kv_) + blocks[i] * bb, bytes.data() + i * bb, bb);
  }
  return OkStatus();
}

}  // namespace

StatusOr<std::unique_ptr<Backend>> CreateCpuBackend(std::unique_ptr<Checkpoint> checkpoint,
                                                    const ModelConfig& config,
                                                    std::string_view config_text,
                                                    const BackendOptions& options) {
  ASSIGN_OR_RETURN(ModelWeights weights, BindWeights(*checkpoint, config));
  int threads = options.num_threads > 0 ? options.num_threads
                                        : static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
  threads = std::clamp(threads, 1, 256);
  // OpenBLAS runs inside our pool's tasks: one thread each.
  openblas_set_num_threads(1);
  auto backend =
      std::make_unique<CpuBackend>(std::move(checkpoint), config, std::move(weights), threads);
  RETURN_IF_ERROR(backend->Init(options, config_text));
  return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace crescent::model::cpu
