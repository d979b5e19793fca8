// Launchers of the CUDA backend's own kernels (kernels.cu, attention.cu).
//
// Data types: weights, the KV pool and GEMM inputs are bf16
// (__nv_bfloat16, passed here as uint16_t so that this header stays plain
// C++); the residual stream, GEMM outputs, norm weights and biases are
// float32. All launchers are asynchronous on `stream` and return the launch
// error (cudaGetLastError) so the caller can turn it into a Status.
//
// Shapes use the ModelConfig names: T new tokens in the batch, H hidden,
// Hq/Hkv query/KV heads, D head dim, I intermediate, V vocabulary.
//
// Internal to src/model/cuda.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace crescent::model::cuda {

using bf16_t = uint16_t;  // __nv_bfloat16 bits

// Kernels of the decode path launch with programmatic dependent launch
// (each may start while the previous one finishes; device_helpers.cuh).
// Off makes every launch wait for the previous kernel (profiling).
void SetChainedLaunches(bool enabled);

// x[t][0..H) = float(embed[ids[t]][0..H)). Moves T*H*(2+4) bytes.
cudaError_t LaunchEmbed(const int32_t* ids, const bf16_t* embed, int32_t T, int32_t H, float* x,
                        cudaStream_t stream);

// cos/sin[t][i] of angle float(positions[t]) * inv_freq[i] (float32
// product as torch), cos/sin evaluated in double and rounded: the same
// tables as the CPU backend's RopeCosSin. [T][half] each.
cudaError_t LaunchRopeTables(const int32_t* positions, const float* inv_freq, int32_t T,
                             int32_t half, float* cos_out, float* sin_out, cudaStream_t stream);

// For each output row r < rows, source row s = gather ? gather[r] : r:
//   if delta: x[s] += delta[s] + delta_bias (the residual add, written back)
//   out[r] = bf16(x[s] / sqrt(mean(x[s]^2) + eps) * weight)
// One pass over x: reads rows*H*(4+4), writes rows*H*(4+2) bytes.
cudaError_t LaunchAddRmsNorm(float* x, const float* delta, const float* delta_bias,
                             const float* weight, const int32_t* gather, int32_t rows, int32_t H,
                             float eps, bf16_t* out, cudaStream_t stream);

// The attention prologue on the fused q/k/v GEMM output qkv[T][Hq*D +
// 2*Hkv*D] (float32): adds the biases (qkv_bias, nullable), applies Qwen3's
// per-head RMSNorm to q and k (q_norm/k_norm, nullable), RoPE to q and k,
// leaves q (float32) in place and writes K and V as bf16 into the paged pool
// at slots[t] (block * B + slot) in the kv_layout.h order for `layer`.
struct QkvPrologueArgs {
  float* qkv;               // [T][Hq*D + 2*Hkv*D]
  const float* qkv_bias;    // [Hq*D + 2*Hkv*D] or null
  const float* q_norm;      // [D] or null
  const float* k_norm;      // [D] or null
  const float* cos_tab;     // [T][D/2]
  const float* sin_tab;     // [T][D/2]
  const int32_t* slots;     // [T] block * B + slot
  bf16_t* kv_pool;          // [blocks][L][2][Hkv][B][D]
  int32_t T, Hq, Hkv, D, B, L, layer;
  float eps;
};
cudaError_t LaunchQkvPrologue(const QkvPrologueArgs& a, cudaStream_t stream);

// The same prologue for a prefill-only batch whose q/k/v GEMM stored bf16:
// reads qkv16[T][Hq*D + 2*Hkv*D] (bf16; a.qkv is ignored), writes q as bf16
// to q16[T][Hq*D] and K/V into the pool as above. One warp per (token,
// head), 4-byte loads; reads T*(Hq+2Hkv)*D*2 bytes, writes as many.
// Supported D: a multiple of 4, <= 256.
cudaError_t LaunchQkvPrologueBf16(const QkvPrologueArgs& a, const bf16_t* qkv16, bf16_t* q16,
                                  cudaStream_t stream);

// act[t][i] = bf16(silu(g) * u), g = gu[t][i] + bias[i], u = gu[t][I + i] +
// bias[I + i] (bias nullable). Reads T*2I*4, writes T*I*2 bytes.
cudaError_t LaunchSwiGlu(const float* gu, const float* bias, int32_t T, int32_t I, bf16_t* act,
                         cudaStream_t stream);
// The same from a bf16 gate/up GEMM output gu[T][2I]: reads T*2I*2, writes
// T*I*2 bytes (16-byte vectors when I % 8 == 0).
cudaError_t LaunchSwiGluBf16(const bf16_t* gu, const float* bias, int32_t T, int32_t I,
                             bf16_t* act, cudaStream_t stream);

// ---- decode-size projections (gemv.cu) ----

// y[t][n] = in(x)[t][0..K) . w[n][0..K) (+ bias[n]) for t < T <=
// kGemvMaxRows, where in() is one of the GemvInput modes, and the result is
// stored or added to y (the residual stream). Each warp streams 4 weight
// rows once with 16-byte loads, several warps split long rows (so that
// even N = 1024 keeps enough bytes in flight), partial sums meet in shared
// memory. Bandwidth-bound: N*K*2 bytes of weights. K % 8 == 0.
inline constexpr int32_t kGemvMaxRows = 8;
enum class GemvInput : uint8_t {
  kBf16,     // x: bf16 [T][K]
  kNormF32,  // x: float [T][K], RMSNorm(x) * norm fused in (the residual stream)
  kSwiGlu,   // x: float [T][2K] gate|up, silu(gate) * up fused in
};
struct GemvArgs {
  GemvInput input = GemvInput::kBf16;
  const void* x = nullptr;
  const float* norm = nullptr;  // kNormF32: [K]
  float eps = 1e-6f;            // kNormF32
  const bf16_t* w = nullptr;    // [N][K]
  const float* bias = nullptr;  // [N] or null
  float* y = nullptr;           // [T][N]
  bool accumulate = false;      // y += result instead of y = result
  int32_t T = 0, K = 0, N = 0;
};
cudaError_t LaunchGemv(const GemvArgs& a, cudaStream_t stream);

// ---- attention (attention.cu) ----

// What every attention launch shares: where q, K/V and the output live.
struct AttentionArgs {
  const float* qkv;          // q of token t, head h at qkv[t * qkv_stride + h * D]
  int32_t qkv_stride;        // Hq*D + 2*Hkv*D
  // Prefill only: when set, q is bf16 at q16[t * Hq*D + h * D] instead (it
  // may alias `out`: a block reads its q rows before it writes them).
  const bf16_t* q16;
  const bf16_t* kv_pool;     // [blocks][L][2][Hkv][B][D]
  const int32_t* block_tables;  // flattened per-sequence block tables
  bf16_t* out;               // [T][Hq*D]
  int32_t Hq, Hkv, D, B, L, layer;
  float scale;               // 1/sqrt(D)
};

// One query token attending causally: token row `row` of sequence with
// block table at block_tables[table_offset], attending positions [0, position].
struct DecodeItem {
  int32_t row, position, table_offset, pad;
};

// Split-K decode attention: grid (items, Hkv, splits), each block attends
// keys [split * split_len, ...) for all Hq/Hkv query heads of one KV head
// in one pass (online softmax).
// With splits > 1 the partial results go to `partial` (float32,
// [items][Hq][splits][D + 2]) and the last split block of each (item, kv
// head) to finish, found through `counters` ([items][Hkv], zero before the
// first launch and left zero), merges them into `out`. Every K/V byte of the
// context is read once per (item, kv head).
// Supported D: 8, 16, 32, 64, 128, 256; Hq/Hkv <= 8.
cudaError_t LaunchDecodeAttention(const AttentionArgs& a, const DecodeItem* items,
                                  int32_t num_items, int32_t splits, int32_t split_len,
                                  float* partial, int32_t* counters, cudaStream_t stream);
bool DecodeAttentionSupports(int32_t D, int32_t group);

// A tile of up to kPrefillTileRows consecutive query tokens of one sequence.
struct PrefillTile {
  int32_t row;           // token row of the first query
  int32_t position;      // its position
  int32_t rows;          // 1..kPrefillTileRows
  int32_t table_offset;  // block table of the sequence
};
inline constexpr int32_t kPrefillTileRows = 64;

// Tiled causal attention on the tensor cores (FlashAttention-2 on mma.sync
// bf16 with float32 accumulation and softmax in registers, K/V tiles
// double-buffered through cp.async): grid (tiles, Hq). Supported D: 32, 64,
// 128.
cudaError_t LaunchPrefillAttention(const AttentionArgs& a, const PrefillTile* tiles,
                                   int32_t num_tiles, cudaStream_t stream);
bool PrefillAttentionSupports(int32_t D);

// ---- sampling (sampler.cu) ----

// One row to sample: SamplingRequest (backend.h) plus where its logits are.
struct DeviceSampleParams {
  float temperature, top_p, min_p;
  int32_t top_k;
  double uniform;   // the caller's draw in [0, 1)
  int32_t logprob;  // 1: also the token's logprob and rank
  int32_t row;      // logits row (of row_stride floats)
};
struct DeviceSampleResult {
  int32_t token;
  float logprob;  // log_softmax of the raw row at token (when asked)
  int32_t rank;   // 1 + tokens with a larger logit (when asked)
  int32_t pad;
};
static_assert(sizeof(DeviceSampleParams) == 32, "upload layout");

// out[i] = the token drawn from row params[i].row of logits, one block per
// row (sampler.cu says how). Greedy rows agree with engine::Argmax exactly.
cudaError_t LaunchSample(const float* logits, int64_t row_stride, const DeviceSampleParams* params,
                         int32_t rows, int32_t V, DeviceSampleResult* out, cudaStream_t stream);

}  // namespace crescent::model::cuda
