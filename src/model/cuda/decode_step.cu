// The persistent batch-1 decode step (decode_step.h says why and what).
//
// Block layout: warps 0-7 consume (compute every stage), warp 8's lane 0
// produces (bulk-copies weight tiles into the ring). A tile is 8 rows x up
// to 1024 columns of one matrix (16 KiB): consumer warp w owns row w of it.
// Both sides walk the same schedule: per layer the q/k/v, o, gate/up and
// down matrices, then lm_head; of each matrix the row groups g = blockIdx.x,
// blockIdx.x + gridDim.x, ..., of each group its column chunks in order.
// The ring's slots are guarded by a "full" mbarrier (bulk copy landed) and
// an "empty" one (all 8 consumer warps are done with it).
#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>
#include <cstdlib>

#include "model/cuda/decode_step.h"
#include "model/cuda/device_helpers.cuh"

namespace crescent::model::cuda {
namespace {

constexpr int kConsumerWarps = 8;
constexpr int kConsumers = kConsumerWarps * 32;
constexpr int kThreads = kConsumers + 32;  // + the producer warp (last)
constexpr int kTileRows = kConsumerWarps;  // one row per consumer warp
constexpr int kMaxChunk = 1024;            // columns per tile
constexpr int kSlotBytes = kTileRows * kMaxChunk * 2;
constexpr int kStagesPerLayer = 5;
constexpr int kMaxGroup = 8;
// Residual rows a block keeps in shared memory: H <= kMaxResidRows x blocks.
constexpr int kMaxResidRows = 256;
// Static shared memory of the kernel stays below this (resid, red, flags).
constexpr int kStaticSmemBound = 2048;
constexpr float kLog2e = 1.4426950408889634f;
// A wait that spins this long is a bug: trap (the launch fails with an
// error) rather than hang the device.
constexpr long long kSpinLimit = 1ll << 26;

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void MbarInit(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(SmemAddr(bar)), "r"(count));
}
__device__ __forceinline__ void MbarExpectTx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(SmemAddr(bar)),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void MbarArrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(SmemAddr(bar)) : "memory");
}
// A consumer's "done with this slot": relaxed, so that it does not wait
// for the consumer's outstanding global stores and loads (a release would:
// ~0.5 us per tile measured). The slot's shared-memory reads are complete:
// their values were consumed before this point.
__device__ __forceinline__ void MbarArriveRelaxed(uint64_t* bar) {
  asm volatile("mbarrier.arrive.relaxed.cta.shared::cta.b64 _, [%0];" ::"r"(SmemAddr(bar))
               : "memory");
}
__device__ __forceinline__ void MbarWait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  long long spins = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(SmemAddr(bar)), "r"(parity)
        : "memory");
    if (++spins > kSpinLimit) __trap();
  } while (!done);
}
__device__ __forceinline__ void BulkCopy(void* dst, const void* src, uint32_t bytes,
                                         uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(SmemAddr(dst)),
      "l"(src), "r"(bytes), "r"(SmemAddr(bar))
      : "memory");
}
// Barrier of the 256 consumer threads (the producer warp never joins).
__device__ __forceinline__ void ConsumerSync() {
  asm volatile("bar.sync 1, %0;" ::"n"(kConsumers) : "memory");
}

// Grid-wide barrier of the consumers: every block adds 1 to this stage's
// counter (zeroed before the launch) and waits until all have.
__device__ __forceinline__ uint64_t GlobalTimer() {
  uint64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// Grid-wide barrier of the consumers: every block adds 1 to this stage's
// counter and waits until it reaches `target` (launch number x blocks: the
// counters only grow, so no launch has to clear them). The release add
// orders the block's writes (ordered before it by the consumer barrier)
// before the waiters' acquire loads.
// With `trace`: block b's arrival at barrier s goes to trace[s * grid + b],
// block 0's release to trace[stages * grid + s].
// `while_waiting` runs on every consumer thread between the arrival and the
// wait (thread 0 after its release add, so none of its loads delay it).
template <typename WhileWaiting>
__device__ void GridSync(uint32_t* counter, uint32_t target, int tid, uint64_t* trace, int stage,
                         int stages, WhileWaiting&& while_waiting, uint32_t ablate) {
  ConsumerSync();
  if (ablate & 16) {
    while_waiting();
    ConsumerSync();
    return;
  }
  if (tid == 0) {
    if (trace) trace[int64_t{stage} * gridDim.x + blockIdx.x] = GlobalTimer();
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
  }
  while_waiting();
  if (tid == 0) {
    uint32_t v;
    long long spins = 0;
    while (true) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(counter) : "memory");
      if (static_cast<int32_t>(v - target) >= 0) break;
      if (++spins > kSpinLimit) __trap();
    }
    if (trace && blockIdx.x == 0) trace[int64_t{stages} * gridDim.x + stage] = GlobalTimer();
  }
  ConsumerSync();
}
__device__ __forceinline__ void GridSync(uint32_t* counter, uint32_t target, int tid,
                                         uint64_t* trace, int stage, int stages, uint32_t ablate) {
  GridSync(counter, target, tid, trace, stage, stages, [] {}, ablate);
}

// Block b's time of reaching the middle of stage s (inputs loaded) goes to
// trace[stages * (grid + 1) + 2 + s * grid + b].
__device__ __forceinline__ void TraceMid(uint64_t* trace, int stage, int stages, int tid) {
  if (trace && tid == 0) {
    trace[int64_t{stages} * (gridDim.x + 1) + 2 + int64_t{stage} * gridDim.x + blockIdx.x] =
        GlobalTimer();
  }
}

// ---- the weight stream ----

struct Ring {
  char* base;
  uint64_t* full;
  uint64_t* empty;
  uint32_t slots;
  uint32_t seq;  // tiles taken so far
  uint64_t wait_ns[8];  // tracing: time spent waiting on slots, per matrix kind
  uint32_t ablate;      // DecodeStepArgs::ablate
};

// Waits on a slot barrier, adding the time to *ns when tracing.
__device__ __forceinline__ void TimedWait(uint64_t* bar, uint32_t parity, uint64_t* ns) {
  if (!ns) return MbarWait(bar, parity);
  const uint64_t t0 = GlobalTimer();
  MbarWait(bar, parity);
  *ns += GlobalTimer() - t0;
}

// Streams the block's tiles of w [N][K] into the ring: row groups
// g = blockIdx.x, + gridDim.x, ..., each group's column chunks in order.
__device__ void ProduceMatrix(const bf16_t* w, int32_t N, int32_t K, Ring& r, uint64_t* ns) {
  const int32_t chunk = min(K, kMaxChunk), chunks = K / chunk;
  const int32_t groups = (N + kTileRows - 1) / kTileRows;
  const uint32_t row_bytes = static_cast<uint32_t>(chunk) * 2;
  for (int32_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int32_t rows = min(kTileRows, N - g * kTileRows);
    const bf16_t* src = w + int64_t{g} * kTileRows * K;
    for (int32_t c = 0; c < chunks; ++c, ++r.seq) {
      const uint32_t slot = r.seq % r.slots, round = r.seq / r.slots;
      if (round > 0) TimedWait(&r.empty[slot], (round - 1) & 1, ns);
      char* dst = r.base + size_t{slot} * kSlotBytes;
      if (r.ablate & 32) {
        MbarArrive(&r.full[slot]);
        continue;
      }
      MbarExpectTx(&r.full[slot], rows * row_bytes);
      if (chunks == 1) {
        BulkCopy(dst, src, rows * row_bytes, &r.full[slot]);
      } else {
        for (int32_t i = 0; i < rows; ++i) {
          BulkCopy(dst + i * row_bytes, src + int64_t{i} * K + c * chunk, row_bytes, &r.full[slot]);
        }
      }
    }
  }
}

// One lane's share of a tile row . act: kIters x 8 columns, all loads
// issued before the arithmetic, one accumulator per 8 columns.
template <int kIters>
__device__ __forceinline__ float TileDot(const __nv_bfloat16* wr, const float* xr, int lane) {
  uint4 raw[kIters];
  float4 x0[kIters], x1[kIters];
#pragma unroll
  for (int j = 0; j < kIters; ++j) {
    const int k = lane * 8 + j * 256;
    raw[j] = *reinterpret_cast<const uint4*>(wr + k);
    x0[j] = *reinterpret_cast<const float4*>(xr + k);
    x1[j] = *reinterpret_cast<const float4*>(xr + k + 4);
  }
  float total = 0.f;
#pragma unroll
  for (int j = 0; j < kIters; ++j) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw[j]);
    const float2 w0 = __bfloat1622float2(h[0]), w1 = __bfloat1622float2(h[1]);
    const float2 w2 = __bfloat1622float2(h[2]), w3 = __bfloat1622float2(h[3]);
    float a = w0.x * x0[j].x;
    float b = w0.y * x0[j].y;
    a = fmaf(w1.x, x0[j].z, a);
    b = fmaf(w1.y, x0[j].w, b);
    a = fmaf(w2.x, x1[j].x, a);
    b = fmaf(w2.y, x1[j].y, b);
    a = fmaf(w3.x, x1[j].z, a);
    b = fmaf(w3.y, x1[j].w, b);
    total += a + b;
  }
  return total;
}

// y[n] = scale * (w[n] . act) + bias[n] for the block's rows n; with
// `resid` (the block's own rows of the residual stream, in shared memory,
// kTileRows per row group in schedule order) y[n] = resid += that.
template <int kChunk>
__device__ void ConsumeMatrixT(int32_t N, int32_t K, const float* act, float scale,
                               const float* bias, float* y, float* resid, Ring& r, int warp,
                               int lane, uint64_t* ns) {
  const int32_t chunks = K / kChunk;
  const int32_t groups = (N + kTileRows - 1) / kTileRows;
  for (int32_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int32_t row = g * kTileRows + warp;
    float acc = 0.f;
    for (int32_t c = 0; c < chunks; ++c, ++r.seq) {
      const uint32_t slot = r.seq % r.slots;
      TimedWait(&r.full[slot], (r.seq / r.slots) & 1, warp == 0 && lane == 0 ? ns : nullptr);
      if (row < N && !(r.ablate & 1)) {
        const __nv_bfloat16* wr =
            reinterpret_cast<const __nv_bfloat16*>(r.base + size_t{slot} * kSlotBytes) +
            warp * kChunk;
        acc += TileDot<kChunk / 256>(wr, act + c * kChunk, lane);
      }
      __syncwarp();
      if (lane == 0) MbarArriveRelaxed(&r.empty[slot]);
    }
    acc = WarpSum(acc);
    if (lane == 0 && row < N) {
      float v = acc * scale;
      if (bias) v += bias[row];
      if (resid) {
        float* own = resid + (g - blockIdx.x) / gridDim.x * kTileRows + warp;
        v += *own;
        *own = v;
      }
      y[row] = v;
    }
  }
}

__device__ __forceinline__ void ConsumeMatrix(int32_t N, int32_t K, const float* act, float scale,
                                              const float* bias, float* y, float* resid,
                                              Ring& r, int warp, int lane, uint64_t* ns) {
  switch (min(K, kMaxChunk)) {
    case 256:
      return ConsumeMatrixT<256>(N, K, act, scale, bias, y, resid, r, warp, lane, ns);
    case 512:
      return ConsumeMatrixT<512>(N, K, act, scale, bias, y, resid, r, warp, lane, ns);
    case 768:
      return ConsumeMatrixT<768>(N, K, act, scale, bias, y, resid, r, warp, lane, ns);
    default:
      return ConsumeMatrixT<1024>(N, K, act, scale, bias, y, resid, r, warp, lane, ns);
  }
}

// ---- stage inputs into shared memory (all consumer threads) ----

// act = x * g (x float32 from global, or a bf16 embedding row when
// `embed` is set: then block 0 also writes it to x as the residual stream);
// returns 1 / rms(x). Ends with a consumer barrier.
__device__ float LoadNormed(float* x, const __nv_bfloat16* embed, const float* g, int32_t K,
                            float eps, float* act, float* red, int tid, int warp, int lane,
                            uint32_t ablate) {
  if (ablate & 8) {
    ConsumerSync();
    return 1.f;
  }
  float ss = 0.f;
  for (int32_t k = tid * 4; k < K; k += kConsumers * 4) {
    float4 v;
    if (embed) {
      const __nv_bfloat162* e = reinterpret_cast<const __nv_bfloat162*>(embed + k);
      const float2 a = __bfloat1622float2(e[0]), b = __bfloat1622float2(e[1]);
      v = make_float4(a.x, a.y, b.x, b.y);
      if (blockIdx.x == 0) *reinterpret_cast<float4*>(x + k) = v;
    } else {
      v = __ldcg(reinterpret_cast<const float4*>(x + k));
    }
    const float4 gg = *reinterpret_cast<const float4*>(g + k);
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    *reinterpret_cast<float4*>(act + k) =
        make_float4(v.x * gg.x, v.y * gg.y, v.z * gg.z, v.w * gg.w);
  }
  ss = WarpSum(ss);
  if (lane == 0) red[warp] = ss;
  ConsumerSync();
  float total = 0.f;
#pragma unroll
  for (int i = 0; i < kConsumerWarps; ++i) total += red[i];
  return rsqrtf(total / static_cast<float>(K) + eps);
}

// act = silu(gate) * up of gu = [gate | up]. Ends with a barrier.
__device__ void LoadSwiGlu(const float* gu, int32_t I, float* act, int tid) {
  for (int32_t k = tid * 4; k < I; k += kConsumers * 4) {
    const float4 g = __ldcg(reinterpret_cast<const float4*>(gu + k));
    const float4 u = __ldcg(reinterpret_cast<const float4*>(gu + I + k));
    *reinterpret_cast<float4*>(act + k) =
        make_float4(g.x / (1.f + __expf(-g.x)) * u.x, g.y / (1.f + __expf(-g.y)) * u.y,
                    g.z / (1.f + __expf(-g.z)) * u.z, g.w / (1.f + __expf(-g.w)) * u.w);
  }
  ConsumerSync();
}

// ---- attention of the one new token ----

// Keys of one pass of a block over a split: 64 (lane groups x unroll).
constexpr int kKeysPerPass = 64;
constexpr int kMergeBatch = 8;  // splits merged per round of loads

template <int D>
struct AttnShape {
  static constexpr int kLanes = D / 8;                 // lanes per key row (16 bytes each)
  static constexpr int kGroups = kConsumers / kLanes;  // key rows per load round
  static constexpr int kUnroll = kKeysPerPass / kGroups;
  static_assert(kUnroll >= 1 && kGroups * kUnroll == kKeysPerPass, "64 keys per pass");
};

// K/V rows of the block's first pass, loaded before the barrier that
// precedes attention (the KV of earlier positions does not depend on this
// step), so that their HBM latency hides under the barrier.
template <int D>
struct KvRegs {
  uint4 k[AttnShape<D>::kUnroll], v[AttnShape<D>::kUnroll];
};

// Shared-memory floats the attention stage needs: prepared q heads and the
// new k/v (bf16), sums of squares, and per lane group the softmax state
// and accumulators for the merge.
__host__ __device__ constexpr int32_t AttentionFloats(int32_t D, int32_t G) {
  return (kMaxGroup + 2) * D + D + 16 + 2 * (kConsumers / (D / 8)) * kMaxGroup +
         (kConsumers / (D / 8)) * G * D;
}

// Splits of the context: enough (KV head, split) items to give every block
// one, each a whole number of 64-key passes.
__device__ __forceinline__ void SplitPlan(int32_t ctx, int32_t Hkv, int32_t* split_len,
                                          int32_t* splits) {
  const int32_t smax = max(1, static_cast<int32_t>(gridDim.x) / Hkv);
  int32_t len = (ctx + smax - 1) / smax;
  len = (len + kKeysPerPass - 1) / kKeysPerPass * kKeysPerPass;
  *split_len = len;
  *splits = (ctx + len - 1) / len;
}

__device__ __forceinline__ const __nv_bfloat16* KeyRow(const DecodeStepArgs& a, int32_t layer,
                                                       int32_t kvh, int32_t key, int32_t D) {
  const int64_t block_elems = int64_t{a.L} * 2 * a.Hkv * a.B * D;
  return reinterpret_cast<const __nv_bfloat16*>(a.kv_pool) +
         a.block_table[key / a.B] * block_elems + (int64_t{layer} * 2 * a.Hkv + kvh) * a.B * D +
         int64_t{key % a.B} * D;
}

// Loads the K/V rows of pass `kb` of (layer, kvh) that are in the pool
// already (keys < pos, < k_end); the others stay zero.
template <int D>
__device__ __forceinline__ void LoadKvPass(const DecodeStepArgs& a, int32_t layer, int32_t kvh,
                                           int32_t kb, int32_t k_end, int32_t pos, KvRegs<D>& r,
                                           int tid) {
  using S = AttnShape<D>;
  const int group = tid / S::kLanes, l8 = tid % S::kLanes;
  const int64_t plane = int64_t{a.Hkv} * a.B * D;  // K -> V of the same slot
#pragma unroll
  for (int u = 0; u < S::kUnroll; ++u) {
    const int32_t key = kb + u * S::kGroups + group;
    r.k[u] = r.v[u] = make_uint4(0, 0, 0, 0);
    if (key < k_end && key < pos) {
      const __nv_bfloat16* row = KeyRow(a, layer, kvh, key, D) + l8 * 8;
      r.k[u] = __ldcg(reinterpret_cast<const uint4*>(row));
      r.v[u] = __ldcg(reinterpret_cast<const uint4*>(row + plane));
    }
  }
}

template <int D>
__device__ void AttentionPrefetch(const DecodeStepArgs& a, int32_t layer, int32_t pos,
                                  KvRegs<D>& r, int tid) {
  int32_t split_len, splits;
  SplitPlan(pos + 1, a.Hkv, &split_len, &splits);
  const int32_t item = blockIdx.x;
  if (item >= a.Hkv * splits) return;
  const int32_t kvh = item / splits, k_begin = (item % splits) * split_len;
  LoadKvPass<D>(a, layer, kvh, k_begin, min(pos + 1, k_begin + split_len), pos, r, tid);
}

// Attention of the new token over split `split` of KV head `kvh`, for its
// G query heads: writes the unnormalised output and the softmax max and sum
// to partial[h][split] (merged by MergeAttention). The split holding the
// new position first computes its K and V (k-norm, RoPE) and stores them.
template <int D, int kG>
__device__ void AttentionStage(const DecodeStepArgs& a, const StepLayer& w, int32_t layer,
                               int32_t pos, float* region, const KvRegs<D>& pre, int tid,
                               int stage, int stages) {
  using S = AttnShape<D>;
  constexpr int kHalf = D / 2;
  const int32_t G = a.Hq / a.Hkv, ctx = pos + 1;
  const int32_t QD = a.Hq * D, KD = a.Hkv * D;
  const int32_t smax = max(1, static_cast<int32_t>(gridDim.x) / a.Hkv);
  int32_t split_len, splits;
  SplitPlan(ctx, a.Hkv, &split_len, &splits);
  const int32_t items = a.Hkv * splits;
  float* q_s = region;                           // [G][D] (kMaxGroup + 2 rows reserved)
  __nv_bfloat16* new_kv = reinterpret_cast<__nv_bfloat16*>(q_s + (kMaxGroup + 2) * D);  // [2][D]
  float* ss_s = q_s + (kMaxGroup + 3) * D;       // [16]
  float* m_s = ss_s + 16;                        // [kGroups][kMaxGroup]
  float* l_s = m_s + S::kGroups * kMaxGroup;     // [kGroups][kMaxGroup]
  float* acc_s = l_s + S::kGroups * kMaxGroup;   // [kGroups][G][D]
  const float qscale = a.scale * kLog2e;
  const float* cos_tab = a.rope;
  const float* sin_tab = a.rope + kHalf;
  const int lane = tid % 32, group = tid / S::kLanes, l8 = tid % S::kLanes;

  for (int32_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int32_t kvh = item / splits, split = item % splits;
    const int32_t k_begin = split * split_len, k_end = min(ctx, k_begin + split_len);
    const bool has_new = k_end == ctx;  // this split holds the new position
    const int32_t heads = G + (has_new ? 2 : 0);
    if (tid < 16) ss_s[tid] = 0.f;
    ConsumerSync();
    // Pass 1: raw q (and k, v) + bias into q_s, per-head sums of squares.
    // Every thread runs the same number of iterations (shuffles).
    for (int32_t base = 0; base < heads * kHalf; base += kConsumers) {
      const int32_t p = base + tid;
      const bool valid = p < heads * kHalf;
      const int32_t hs = valid ? p / kHalf : 0, i = p % kHalf;
      const int32_t col = hs < G ? (kvh * G + hs) * D : QD + (hs - G) * KD + kvh * D;
      float lo = 0.f, hi = 0.f;
      if (valid) {
        lo = __ldcg(a.qkv + col + i);
        hi = __ldcg(a.qkv + col + i + kHalf);
        if (w.qkv_bias) {
          lo += w.qkv_bias[col + i];
          hi += w.qkv_bias[col + i + kHalf];
        }
        q_s[hs * D + i] = lo;
        q_s[hs * D + i + kHalf] = hi;
      }
      // Sum over the lanes of one head (kHalf >= 32: whole warps; else
      // aligned groups of kHalf lanes); at most 2 adds per head: exact order.
      float v = lo * lo + hi * hi;
      constexpr int kSpan = kHalf < 32 ? kHalf : 32;
#pragma unroll
      for (int o = kSpan / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (valid && lane % kSpan == 0) atomicAdd(&ss_s[hs], v);
    }
    ConsumerSync();
    // Pass 2: q/k-norm, RoPE (the host's tables of this position); q scaled
    // into q_s, the new k and v (bf16) into the pool and new_kv.
    for (int32_t p = tid; p < heads * kHalf; p += kConsumers) {
      const int32_t hs = p / kHalf, i = p % kHalf;
      float lo = q_s[hs * D + i], hi = q_s[hs * D + i + kHalf];
      const float* norm = hs < G ? w.q_norm : (hs == G ? w.k_norm : nullptr);
      if (norm) {
        const float inv = rsqrtf(ss_s[hs] / static_cast<float>(D) + a.eps);
        lo = lo * inv * norm[i];
        hi = hi * inv * norm[i + kHalf];
      }
      if (hs <= G) {
        const float cf = cos_tab[i], sf = sin_tab[i];
        const float rl = lo * cf - hi * sf, rh = hi * cf + lo * sf;
        lo = rl;
        hi = rh;
      }
      if (hs < G) {
        q_s[hs * D + i] = lo * qscale;
        q_s[hs * D + i + kHalf] = hi * qscale;
      } else {
        const __nv_bfloat16 blo = __float2bfloat16(lo), bhi = __float2bfloat16(hi);
        __nv_bfloat16* dst = const_cast<__nv_bfloat16*>(KeyRow(a, layer, kvh, pos, D)) +
                             (hs - G) * int64_t{a.Hkv} * a.B * D;
        dst[i] = blo;
        dst[i + kHalf] = bhi;
        new_kv[(hs - G) * D + i] = blo;
        new_kv[(hs - G) * D + i + kHalf] = bhi;
      }
    }
    ConsumerSync();  // q_s and new_kv ready
    if (item == static_cast<int32_t>(blockIdx.x)) TraceMid(a.trace, stage, stages, tid);

    float q[kG][8], m[kG], l[kG], acc[kG][8];
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      m[g] = -FLT_MAX;
      l[g] = 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        q[g][j] = g < G ? q_s[g * D + l8 * 8 + j] : 0.f;
        acc[g][j] = 0.f;
      }
    }
    for (int32_t kb = k_begin; kb < k_end; kb += kKeysPerPass) {
      KvRegs<D> r;
      if (item == static_cast<int32_t>(blockIdx.x) && kb == k_begin) {
        r = pre;
      } else {
        LoadKvPass<D>(a, layer, kvh, kb, k_end, pos, r, tid);
      }
#pragma unroll
      for (int u = 0; u < S::kUnroll; ++u) {
        const int32_t key = kb + u * S::kGroups + group;
        if (key == pos) {
          r.k[u] = *reinterpret_cast<const uint4*>(new_kv + l8 * 8);
          r.v[u] = *reinterpret_cast<const uint4*>(new_kv + D + l8 * 8);
        }
        const bool valid = key < k_end;
        float kf[8], vf[8];
        const __nv_bfloat162* kh = reinterpret_cast<const __nv_bfloat162*>(&r.k[u]);
        const __nv_bfloat162* vh = reinterpret_cast<const __nv_bfloat162*>(&r.v[u]);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 kk = __bfloat1622float2(kh[j]), vv = __bfloat1622float2(vh[j]);
          kf[2 * j] = kk.x;
          kf[2 * j + 1] = kk.y;
          vf[2 * j] = vv.x;
          vf[2 * j + 1] = vv.y;
        }
#pragma unroll
        for (int g = 0; g < kG; ++g) {
          if (g >= G) break;
          float dot = 0.f;
#pragma unroll
          for (int j = 0; j < 8; ++j) dot += q[g][j] * kf[j];
#pragma unroll
          for (int o = S::kLanes / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
          if (!valid) continue;
          const float m_new = fmaxf(m[g], dot);
          const float sc = exp2f(m[g] - m_new), pr = exp2f(dot - m_new);
          l[g] = l[g] * sc + pr;
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[g][j] = acc[g][j] * sc + pr * vf[j];
          m[g] = m_new;
        }
      }
    }
    // Merge the lane groups into this split's partial.
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      if (g >= G) break;
      if (l8 == 0) {
        m_s[group * kMaxGroup + g] = m[g];
        l_s[group * kMaxGroup + g] = l[g];
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) acc_s[(group * G + g) * D + l8 * 8 + j] = acc[g][j];
    }
    ConsumerSync();
    for (int32_t i = tid; i < G * D; i += kConsumers) {
      const int32_t g = i / D, d = i % D, h = kvh * G + g;
      float mx = -FLT_MAX;
      for (int k = 0; k < S::kGroups; ++k) mx = fmaxf(mx, m_s[k * kMaxGroup + g]);
      float o = 0.f, sum = 0.f;
      for (int k = 0; k < S::kGroups; ++k) {
        const float wk = exp2f(m_s[k * kMaxGroup + g] - mx);  // 0 for groups without keys
        o += wk * acc_s[(k * G + g) * D + d];
        sum += wk * l_s[k * kMaxGroup + g];
      }
      float* p = a.partial + (int64_t{h} * smax + split) * (D + 2);
      p[d] = o;
      if (d == 0) {
        p[D] = mx;
        p[D + 1] = sum;
      }
    }
    ConsumerSync();  // shared memory is reused by the next item
  }
}

// act[h][d] = the attention output of head h: the splits' partials merged
// (online, kMergeBatch splits per round of loads). Ends with a barrier.
template <int D>
__device__ void MergeAttention(const DecodeStepArgs& a, int32_t pos, float* act, int warp,
                               int lane) {
  constexpr int kPerLane = D / 32;
  const int32_t smax = max(1, static_cast<int32_t>(gridDim.x) / a.Hkv);
  int32_t split_len, splits;
  SplitPlan(pos + 1, a.Hkv, &split_len, &splits);
  // Two heads per warp at a time: twice the loads in flight.
  for (int32_t h0 = warp; h0 < a.Hq; h0 += 2 * kConsumerWarps) {
    const int32_t hs[2] = {h0, h0 + kConsumerWarps};
    float mx[2] = {-FLT_MAX, -FLT_MAX}, sum[2] = {0.f, 0.f}, o[2][kPerLane] = {};
    for (int32_t s0 = 0; s0 < splits; s0 += kMergeBatch) {
      float ms[2][kMergeBatch], ls[2][kMergeBatch], os[2][kMergeBatch][kPerLane];
#pragma unroll
      for (int x = 0; x < 2; ++x) {
#pragma unroll
        for (int j = 0; j < kMergeBatch; ++j) {
          ms[x][j] = -FLT_MAX;
          ls[x][j] = 0.f;
#pragma unroll
          for (int e = 0; e < kPerLane; ++e) os[x][j][e] = 0.f;
          if (s0 + j < splits && hs[x] < a.Hq) {
            const float* p = a.partial + (int64_t{hs[x]} * smax + s0 + j) * (D + 2);
            ms[x][j] = __ldcg(p + D);
            ls[x][j] = __ldcg(p + D + 1);
#pragma unroll
            for (int e = 0; e < kPerLane; ++e) os[x][j][e] = __ldcg(p + lane + 32 * e);
          }
        }
      }
#pragma unroll
      for (int x = 0; x < 2; ++x) {
        float cm = mx[x];
#pragma unroll
        for (int j = 0; j < kMergeBatch; ++j) cm = fmaxf(cm, ms[x][j]);
        const float old = exp2f(mx[x] - cm);
        sum[x] *= old;
#pragma unroll
        for (int e = 0; e < kPerLane; ++e) o[x][e] *= old;
#pragma unroll
        for (int j = 0; j < kMergeBatch; ++j) {
          const float wj = exp2f(ms[x][j] - cm);
          sum[x] += wj * ls[x][j];
#pragma unroll
          for (int e = 0; e < kPerLane; ++e) o[x][e] += wj * os[x][j][e];
        }
        mx[x] = cm;
      }
    }
#pragma unroll
    for (int x = 0; x < 2; ++x) {
      if (hs[x] >= a.Hq) continue;
#pragma unroll
      for (int e = 0; e < kPerLane; ++e) act[hs[x] * D + lane + 32 * e] = o[x][e] / sum[x];
    }
  }
  ConsumerSync();
}

// ---- the step ----

template <int D, int kG>
__global__ void __launch_bounds__(kThreads, 1)
    DecodeStepKernel(DecodeStepArgs a, uint32_t slots, int32_t region_floats) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ float red[kConsumerWarps];
  __shared__ float resid[kMaxResidRows];
  float* region = reinterpret_cast<float*>(smem + size_t{slots} * kSlotBytes);
  uint64_t* full = reinterpret_cast<uint64_t*>(region + region_floats);
  uint64_t* empty = full + slots;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  if (tid == 0) {
    for (uint32_t i = 0; i < slots; ++i) {
      MbarInit(&full[i], 1);
      MbarInit(&empty[i], kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  Ring ring{reinterpret_cast<char*>(smem), full, empty, slots, 0, {}, a.ablate};
  uint64_t* trace_ns = a.trace ? ring.wait_ns : nullptr;
  // Tracing: [stages * (2 grid + 1) + 2 + b * 8 + k] block b's time waiting
  // for tiles of matrix kind k (0 q/k/v, 2 o, 3 gate/up, 4 down, 5 lm_head),
  // [.. + 6] its producer's time waiting for free slots.
  const int64_t wait_at = int64_t{kStagesPerLayer} * a.L * (2 * gridDim.x + 1) + 2 +
                          int64_t{blockIdx.x} * 8;
  const int32_t H = a.H, I = a.I, QD = a.Hq * D, NQKV = QD + 2 * a.Hkv * D;

  if (a.ablate & 64) return;
  if (warp == kConsumerWarps) {  // the producer: weights only, never waits on activations
    if (lane != 0) return;
    for (int32_t l = 0; l < a.L; ++l) {
      const StepLayer& w = a.layers[l];
      ProduceMatrix(w.qkv, NQKV, H, ring, trace_ns);
      ProduceMatrix(w.o, H, QD, ring, trace_ns);
      ProduceMatrix(w.gate_up, 2 * I, H, ring, trace_ns);
      ProduceMatrix(w.down, H, I, ring, trace_ns);
    }
    if (a.want_logits) ProduceMatrix(a.lm_head, a.V, H, ring, trace_ns);
    if (a.trace) a.trace[wait_at + 6] = ring.wait_ns[0];
    return;
  }

  const int32_t token = *a.token, pos = *a.position;
  uint32_t* stage_counters = a.sync;
  const uint32_t target = a.epoch * gridDim.x;
  int stage = 0;
  const int stages = kStagesPerLayer * a.L;
  if (a.trace && blockIdx.x == 0 && tid == 0) {
    a.trace[int64_t{stages} * gridDim.x + stages] = GlobalTimer();
  }
  const __nv_bfloat16* embed_row =
      reinterpret_cast<const __nv_bfloat16*>(a.embed) + int64_t{token} * H;
  // The block's own rows of the residual stream (those its o_proj and down
  // tiles produce) start as the embedding.
  for (int32_t i = tid; i < kMaxResidRows; i += kConsumers) {
    const int32_t row = (blockIdx.x + i / kTileRows * gridDim.x) * kTileRows + i % kTileRows;
    if (row < H) resid[i] = __bfloat162float(embed_row[row]);
  }
  for (int32_t l = 0; l < a.L; ++l) {
    const StepLayer& w = a.layers[l];
    float inv = LoadNormed(a.x, l == 0 ? embed_row : nullptr, w.input_norm, H, a.eps, region, red,
                           tid, warp, lane, a.ablate);
    TraceMid(a.trace, stage, stages, tid);
    ConsumeMatrix(NQKV, H, region, inv, nullptr, a.qkv, nullptr, ring, warp, lane, trace_ns ? trace_ns + 0 : nullptr);
    KvRegs<D> kv;
    GridSync(stage_counters + stage, target, tid, a.trace, stage, stages,
             [&] { AttentionPrefetch<D>(a, l, pos, kv, tid); }, a.ablate);
    ++stage;
    if (!(a.ablate & 2)) AttentionStage<D, kG>(a, w, l, pos, region, kv, tid, stage, stages);
    GridSync(stage_counters + stage, target, tid, a.trace, stage, stages, a.ablate), ++stage;
    if (!(a.ablate & 4)) MergeAttention<D>(a, pos, region, warp, lane);
    TraceMid(a.trace, stage, stages, tid);
    ConsumeMatrix(H, QD, region, 1.f, w.o_bias, a.x, resid, ring, warp, lane, trace_ns ? trace_ns + 2 : nullptr);
    GridSync(stage_counters + stage, target, tid, a.trace, stage, stages, a.ablate), ++stage;
    inv = LoadNormed(a.x, nullptr, w.post_norm, H, a.eps, region, red, tid, warp, lane, a.ablate);
    TraceMid(a.trace, stage, stages, tid);
    ConsumeMatrix(2 * I, H, region, inv, nullptr, a.gu, nullptr, ring, warp, lane, trace_ns ? trace_ns + 3 : nullptr);
    GridSync(stage_counters + stage, target, tid, a.trace, stage, stages, a.ablate), ++stage;
    if (!(a.ablate & 8)) LoadSwiGlu(a.gu, I, region, tid);
    TraceMid(a.trace, stage, stages, tid);
    ConsumeMatrix(H, I, region, 1.f, w.down_bias, a.x, resid, ring, warp, lane, trace_ns ? trace_ns + 4 : nullptr);
    GridSync(stage_counters + stage, target, tid, a.trace, stage, stages, a.ablate), ++stage;
  }
  if (a.want_logits) {
    const float inv =
        LoadNormed(a.x, nullptr, a.final_norm, H, a.eps, region, red, tid, warp, lane, a.ablate);
    ConsumeMatrix(a.V, H, region, inv, nullptr, a.logits, nullptr, ring, warp, lane, trace_ns ? trace_ns + 5 : nullptr);
  }
  if (a.trace) {
    if (tid == 0) {
      for (int k = 0; k < 6; ++k) a.trace[wait_at + k] = ring.wait_ns[k];
    }
    ConsumerSync();
    if (blockIdx.x == 0 && tid == 0) {
      a.trace[int64_t{stages} * gridDim.x + stages + 1] = GlobalTimer();
    }
  }
}

int32_t RegionFloats(const DecodeStepArgs& a) {
  const int32_t act = std::max({a.H, a.Hq * a.D, a.I});
  const int32_t attention = AttentionFloats(a.D, a.Hq / a.Hkv);
  return (std::max(act, attention) + 3) / 4 * 4;  // 16-byte aligned barriers after it
}

template <int D, int kG>
cudaError_t Launch(const DecodeStepArgs& a, int32_t blocks, cudaStream_t stream) {
  auto kernel = DecodeStepKernel<D, kG>;
  static int max_smem = -1;
  if (max_smem < 0) {
    int device = 0, optin = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err == cudaSuccess) {
      err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    }
    if (err == cudaSuccess) {
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 optin - kStaticSmemBound);
    }
    if (err != cudaSuccess) return err;
    max_smem = optin - kStaticSmemBound;
  }
  if (a.H > int64_t{kMaxResidRows} * blocks) return cudaErrorInvalidValue;
  int32_t region = RegionFloats(a);
  const int64_t fixed = int64_t{region} * 4;
  const int64_t slots = (max_smem - fixed) / (kSlotBytes + 16);
  if (slots < 2) return cudaErrorInvalidConfiguration;
  uint32_t slot_count = static_cast<uint32_t>(slots);
  if (const char* env = std::getenv("CRESCENT_STEP_SLOTS")) {  // experiments: a smaller ring
    slot_count = std::clamp<uint32_t>(static_cast<uint32_t>(std::atoi(env)), 2, slot_count);
  }
  const size_t smem = size_t{slot_count} * kSlotBytes + fixed + size_t{slot_count} * 16;
  DecodeStepArgs args = a;
  if (const char* env = std::getenv("CRESCENT_STEP_ABLATE")) {  // experiments only
    args.ablate = static_cast<uint32_t>(std::atoi(env));
  }
  void* params[] = {&args, &slot_count, &region};
  return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(blocks),
                                     dim3(kThreads), params, smem, stream);
}

template <int D>
cudaError_t LaunchForD(const DecodeStepArgs& a, int32_t blocks, cudaStream_t stream) {
  const int32_t G = a.Hq / a.Hkv;
  if (G <= 2) return Launch<D, 2>(a, blocks, stream);
  if (G <= 4) return Launch<D, 4>(a, blocks, stream);
  return Launch<D, 8>(a, blocks, stream);
}

}  // namespace

bool DecodeStepSupports(int32_t H, int32_t Hq, int32_t Hkv, int32_t D, int32_t I,
                        bool gate_up_bias) {
  auto chunkable = [](int32_t K) {
    const int32_t chunk = std::min(K, kMaxChunk);
    return K > 0 && K % chunk == 0 && chunk % 256 == 0;
  };
  return (D == 32 || D == 64 || D == 128) && Hkv > 0 && Hq % Hkv == 0 && Hq / Hkv <= kMaxGroup &&
         chunkable(H) && chunkable(Hq * D) && chunkable(I) && !gate_up_bias;
}

int64_t DecodeStepSyncWords(int32_t L) { return int64_t{kStagesPerLayer} * L; }

int64_t DecodeStepTraceWords(int32_t L, int32_t blocks) {
  return int64_t{kStagesPerLayer} * L * (2 * blocks + 1) + 2 + int64_t{blocks} * 8;
}

int64_t DecodeStepPartialFloats(int32_t Hq, int32_t Hkv, int32_t D, int32_t blocks) {
  return int64_t{Hq} * std::max(1, blocks / Hkv) * (D + 2);
}

cudaError_t LaunchDecodeStep(const DecodeStepArgs& a, int32_t blocks, cudaStream_t stream) {
  switch (a.D) {
    case 32: return LaunchForD<32>(a, blocks, stream);
    case 64: return LaunchForD<64>(a, blocks, stream);
    case 128: return LaunchForD<128>(a, blocks, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace crescent::model::cuda
