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
constexpr int kMinSplitLen = 32;
constexpr float kLog2e = 1.4426950408889634f;
// A wait that spins this long is a bug: trap (the launch fails with an
// error) rather than hang the device.
constexpr long long kSpinLimit = 1ll << 24;

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
__device__ __forceinline__ void MbarWait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  long long spins = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
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

// With `trace`: block b's arrival at barrier s goes to trace[s * grid + b],
// block 0's release to trace[stages * grid + s].
__device__ void GridSync(uint32_t* counter, int tid, uint64_t* trace, int stage, int stages) {
  ConsumerSync();
  if (tid == 0) {
    if (trace) trace[int64_t{stage} * gridDim.x + blockIdx.x] = GlobalTimer();
    __threadfence();
    atomicAdd(counter, 1u);
    uint32_t v;
    long long spins = 0;
    while (true) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(counter) : "memory");
      if (v >= gridDim.x) break;
      if (++spins > kSpinLimit) __trap();
    }
    if (trace && blockIdx.x == 0) trace[int64_t{stages} * gridDim.x + stage] = GlobalTimer();
  }
  ConsumerSync();
}

// ---- the weight stream ----

struct Ring {
  char* base;
  uint64_t* full;
  uint64_t* empty;
  uint32_t slots;
  uint32_t seq;  // tiles taken so far
};

__device__ void ProduceMatrix(const bf16_t* w, int32_t N, int32_t K, Ring& r) {
  const int32_t chunk = min(K, kMaxChunk), chunks = K / chunk;
  const int32_t groups = (N + kTileRows - 1) / kTileRows;
  const uint32_t row_bytes = static_cast<uint32_t>(chunk) * 2;
  for (int32_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int32_t rows = min(kTileRows, N - g * kTileRows);
    const bf16_t* src = w + int64_t{g} * kTileRows * K;
    for (int32_t c = 0; c < chunks; ++c, ++r.seq) {
      const uint32_t slot = r.seq % r.slots, round = r.seq / r.slots;
      if (round > 0) MbarWait(&r.empty[slot], (round - 1) & 1);
      char* dst = r.base + size_t{slot} * kSlotBytes;
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

// y[n] (=|+=) scale * (w[n] . act) + bias[n] for the block's rows n.
__device__ void ConsumeMatrix(int32_t N, int32_t K, const float* act, float scale,
                              const float* bias, float* y, bool accumulate, Ring& r, int warp,
                              int lane) {
  const int32_t chunk = min(K, kMaxChunk), chunks = K / chunk;
  const int32_t groups = (N + kTileRows - 1) / kTileRows;
  for (int32_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int32_t row = g * kTileRows + warp;
    float acc = 0.f;
    for (int32_t c = 0; c < chunks; ++c, ++r.seq) {
      const uint32_t slot = r.seq % r.slots;
      MbarWait(&r.full[slot], (r.seq / r.slots) & 1);
      if (row < N) {
        const __nv_bfloat16* wr =
            reinterpret_cast<const __nv_bfloat16*>(r.base + size_t{slot} * kSlotBytes) +
            warp * chunk;
        const float* xr = act + c * chunk;
        for (int32_t k = lane * 8; k < chunk; k += 256) {
          const uint4 raw = *reinterpret_cast<const uint4*>(wr + k);
          const float4 x0 = *reinterpret_cast<const float4*>(xr + k);
          const float4 x1 = *reinterpret_cast<const float4*>(xr + k + 4);
          const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
          const float2 w0 = __bfloat1622float2(h[0]), w1 = __bfloat1622float2(h[1]);
          const float2 w2 = __bfloat1622float2(h[2]), w3 = __bfloat1622float2(h[3]);
          acc = fmaf(w0.x, x0.x, fmaf(w0.y, x0.y, acc));
          acc = fmaf(w1.x, x0.z, fmaf(w1.y, x0.w, acc));
          acc = fmaf(w2.x, x1.x, fmaf(w2.y, x1.y, acc));
          acc = fmaf(w3.x, x1.z, fmaf(w3.y, x1.w, acc));
        }
      }
      __syncwarp();
      if (lane == 0) MbarArrive(&r.empty[slot]);
    }
    acc = WarpSum(acc);
    if (lane == 0 && row < N) {
      float v = acc * scale;
      if (bias) v += bias[row];
      y[row] = accumulate ? __ldcg(y + row) + v : v;
    }
  }
}

// ---- stage inputs into shared memory (all consumer threads) ----

// act = x * g (x float32 from global, or a bf16 embedding row when
// `embed` is set: then block 0 also writes it to x as the residual stream);
// returns 1 / rms(x). Ends with a consumer barrier.
__device__ float LoadNormed(float* x, const __nv_bfloat16* embed, const float* g, int32_t K,
                            float eps, float* act, float* red, int tid, int warp, int lane) {
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

// act = src (float32, written by other blocks). Ends with a barrier.
__device__ void LoadPlain(const float* src, int32_t K, float* act, int tid) {
  for (int32_t k = tid * 4; k < K; k += kConsumers * 4) {
    *reinterpret_cast<float4*>(act + k) = __ldcg(reinterpret_cast<const float4*>(src + k));
  }
  ConsumerSync();
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

// Shared-memory floats the attention stage needs: prepared q/k/v heads,
// their sums of squares, and per lane group the softmax state and
// accumulators for the merge.
__host__ __device__ constexpr int32_t AttentionFloats(int32_t D, int32_t G) {
  return (kMaxGroup + 2) * D + 16 + 2 * (kConsumers / (D / 8)) * kMaxGroup +
         (kConsumers / (D / 8)) * G * D;
}

// Splits of the context: enough (KV head, split) items to give every block
// one, splits of at least kMinSplitLen keys.
__device__ __forceinline__ void SplitPlan(int32_t ctx, int32_t Hkv, int32_t* split_len,
                                          int32_t* splits) {
  const int32_t smax = max(1, static_cast<int32_t>(gridDim.x) / Hkv);
  int32_t len = (ctx + smax - 1) / smax;
  len = max(kMinSplitLen, (len + kMinSplitLen - 1) / kMinSplitLen * kMinSplitLen);
  *split_len = len;
  *splits = (ctx + len - 1) / len;
}

template <int D, int kG>
__device__ void AttentionStage(const DecodeStepArgs& a, const StepLayer& w, int32_t layer,
                               int32_t pos, float* region, uint32_t* merge_counters, int tid) {
  constexpr int kLanes = D / 8;                 // lanes per key row (16 bytes each)
  constexpr int kGroups = kConsumers / kLanes;  // keys in flight per pass
  constexpr int kHalf = D / 2;
  constexpr int kUnroll = 2;
  __shared__ bool last;
  const int32_t G = a.Hq / a.Hkv, ctx = pos + 1;
  const int32_t QD = a.Hq * D, KD = a.Hkv * D;
  const int32_t smax = max(1, static_cast<int32_t>(gridDim.x) / a.Hkv);
  int32_t split_len, splits;
  SplitPlan(ctx, a.Hkv, &split_len, &splits);
  const int32_t items = a.Hkv * splits;
  float* q_s = region;                           // [G + 2][D]: q heads, then k, v
  float* ss_s = q_s + (kMaxGroup + 2) * D;       // [16]
  float* m_s = ss_s + 16;                        // [kGroups][kMaxGroup]
  float* l_s = m_s + kGroups * kMaxGroup;        // [kGroups][kMaxGroup]
  float* acc_s = l_s + kGroups * kMaxGroup;      // [kGroups][G][D]
  const int64_t block_elems = int64_t{a.L} * 2 * a.Hkv * a.B * D;
  const int64_t plane = int64_t{a.Hkv} * a.B * D;  // K -> V of the same slot
  const __nv_bfloat16* pool = reinterpret_cast<const __nv_bfloat16*>(a.kv_pool);
  const float qscale = a.scale * kLog2e;
  const int lane = tid % 32;

  for (int32_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int32_t kvh = item / splits, split = item % splits;
    const int32_t k_begin = split * split_len, k_end = min(ctx, k_begin + split_len);
    const bool has_new = k_end == ctx;  // this split writes and reads the new K/V
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
    // Pass 2: q/k-norm, RoPE (tables as RopeTablesKernel: float32 angle,
    // double sincos); q scaled into q_s, the new k and v into the pool.
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
        const float angle = __fmul_rn(static_cast<float>(pos), a.inv_freq[i]);
        double s, c;
        sincos(static_cast<double>(angle), &s, &c);
        const float cf = static_cast<float>(c), sf = static_cast<float>(s);
        const float rl = lo * cf - hi * sf, rh = hi * cf + lo * sf;
        lo = rl;
        hi = rh;
      }
      if (hs < G) {
        q_s[hs * D + i] = lo * qscale;
        q_s[hs * D + i + kHalf] = hi * qscale;
      } else {
        const int64_t block = a.block_table[pos / a.B];
        __nv_bfloat16* dst = reinterpret_cast<__nv_bfloat16*>(a.kv_pool) + block * block_elems +
                             ((int64_t{layer} * 2 + (hs - G)) * a.Hkv + kvh) * a.B * D +
                             int64_t{pos % a.B} * D;
        dst[i] = __float2bfloat16(lo);
        dst[i + kHalf] = __float2bfloat16(hi);
      }
    }
    ConsumerSync();  // q_s ready; the new K/V stored (read below through L2)

    const int group = tid / kLanes, l8 = tid % kLanes;
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
    for (int32_t kb = k_begin; kb < k_end; kb += kGroups * kUnroll) {
      float kf[kUnroll][8], vf[kUnroll][8];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int32_t key = kb + u * kGroups + group;
        if (key < k_end) {
          const __nv_bfloat16* k_row = pool + a.block_table[key / a.B] * block_elems +
                                       (int64_t{layer} * 2 * a.Hkv + kvh) * a.B * D +
                                       int64_t{key % a.B} * D + l8 * 8;
          const uint4 kr = __ldcg(reinterpret_cast<const uint4*>(k_row));
          const uint4 vr = __ldcg(reinterpret_cast<const uint4*>(k_row + plane));
          const __nv_bfloat162* kh = reinterpret_cast<const __nv_bfloat162*>(&kr);
          const __nv_bfloat162* vh = reinterpret_cast<const __nv_bfloat162*>(&vr);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float2 kk = __bfloat1622float2(kh[j]), vv = __bfloat1622float2(vh[j]);
            kf[u][2 * j] = kk.x;
            kf[u][2 * j + 1] = kk.y;
            vf[u][2 * j] = vv.x;
            vf[u][2 * j + 1] = vv.y;
          }
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const bool valid = kb + u * kGroups + group < k_end;
#pragma unroll
        for (int g = 0; g < kG; ++g) {
          if (g >= G) break;
          float dot = 0.f;
#pragma unroll
          for (int j = 0; j < 8; ++j) dot += q[g][j] * (valid ? kf[u][j] : 0.f);
#pragma unroll
          for (int o = kLanes / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
          if (!valid) continue;
          const float m_new = fmaxf(m[g], dot);
          const float sc = exp2f(m[g] - m_new), pr = exp2f(dot - m_new);
          l[g] = l[g] * sc + pr;
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[g][j] = acc[g][j] * sc + pr * vf[u][j];
          m[g] = m_new;
        }
      }
    }
    // Merge the lane groups.
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
      for (int k = 0; k < kGroups; ++k) mx = fmaxf(mx, m_s[k * kMaxGroup + g]);
      float o = 0.f, sum = 0.f;
      for (int k = 0; k < kGroups; ++k) {
        const float wk = exp2f(m_s[k * kMaxGroup + g] - mx);  // 0 for groups without keys
        o += wk * acc_s[(k * G + g) * D + d];
        sum += wk * l_s[k * kMaxGroup + g];
      }
      if (splits == 1) {
        a.attn[h * D + d] = o / sum;
      } else {
        float* p = a.partial + (int64_t{h} * smax + split) * (D + 2);
        p[d] = o;
        if (d == 0) {
          p[D] = mx;
          p[D + 1] = sum;
        }
      }
    }
    if (splits > 1) {
      // The last split of this KV head to finish merges all of them.
      __threadfence();
      ConsumerSync();
      if (tid == 0) last = atomicAdd(&merge_counters[kvh], 1u) == static_cast<uint32_t>(splits - 1);
      ConsumerSync();
      if (last) {
        __threadfence();
        for (int32_t i = tid; i < G * D; i += kConsumers) {
          const int32_t g = i / D, d = i % D, h = kvh * G + g;
          const float* p = a.partial + int64_t{h} * smax * (D + 2);
          float mx = -FLT_MAX;
          for (int s = 0; s < splits; ++s) mx = fmaxf(mx, __ldcg(p + s * (D + 2) + D));
          float o = 0.f, sum = 0.f;
          for (int s = 0; s < splits; ++s) {
            const float wk = exp2f(__ldcg(p + s * (D + 2) + D) - mx);
            sum += wk * __ldcg(p + s * (D + 2) + D + 1);
            o += wk * __ldcg(p + s * (D + 2) + d);
          }
          a.attn[h * D + d] = o / sum;
        }
      }
    }
    ConsumerSync();  // shared memory is reused by the next item
  }
}

// ---- the step ----

template <int D, int kG>
__global__ void __launch_bounds__(kThreads, 1)
    DecodeStepKernel(DecodeStepArgs a, uint32_t slots, int32_t region_floats) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ float red[kConsumerWarps];
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
  Ring ring{reinterpret_cast<char*>(smem), full, empty, slots, 0};
  const int32_t H = a.H, I = a.I, QD = a.Hq * D, NQKV = QD + 2 * a.Hkv * D;

  if (warp == kConsumerWarps) {  // the producer: weights only, never waits on activations
    if (lane != 0) return;
    for (int32_t l = 0; l < a.L; ++l) {
      const StepLayer& w = a.layers[l];
      ProduceMatrix(w.qkv, NQKV, H, ring);
      ProduceMatrix(w.o, H, QD, ring);
      ProduceMatrix(w.gate_up, 2 * I, H, ring);
      ProduceMatrix(w.down, H, I, ring);
    }
    if (a.want_logits) ProduceMatrix(a.lm_head, a.V, H, ring);
    return;
  }

  const int32_t token = *a.token, pos = *a.position;
  uint32_t* stage_counters = a.sync;
  uint32_t* merge_counters = a.sync + kStagesPerLayer * a.L + 2;
  int stage = 0;
  const int stages = kStagesPerLayer * a.L;
  if (a.trace && blockIdx.x == 0 && tid == 0) {
    a.trace[int64_t{stages} * gridDim.x + stages] = GlobalTimer();
  }
  const __nv_bfloat16* embed_row =
      reinterpret_cast<const __nv_bfloat16*>(a.embed) + int64_t{token} * H;
  for (int32_t l = 0; l < a.L; ++l) {
    const StepLayer& w = a.layers[l];
    float inv = LoadNormed(a.x, l == 0 ? embed_row : nullptr, w.input_norm, H, a.eps, region, red,
                           tid, warp, lane);
    ConsumeMatrix(NQKV, H, region, inv, nullptr, a.qkv, false, ring, warp, lane);
    GridSync(stage_counters + stage, tid, a.trace, stage, stages), ++stage;
    AttentionStage<D, kG>(a, w, l, pos, region, merge_counters + l * a.Hkv, tid);
    GridSync(stage_counters + stage, tid, a.trace, stage, stages), ++stage;
    LoadPlain(a.attn, QD, region, tid);
    ConsumeMatrix(H, QD, region, 1.f, w.o_bias, a.x, true, ring, warp, lane);
    GridSync(stage_counters + stage, tid, a.trace, stage, stages), ++stage;
    inv = LoadNormed(a.x, nullptr, w.post_norm, H, a.eps, region, red, tid, warp, lane);
    ConsumeMatrix(2 * I, H, region, inv, nullptr, a.gu, false, ring, warp, lane);
    GridSync(stage_counters + stage, tid, a.trace, stage, stages), ++stage;
    LoadSwiGlu(a.gu, I, region, tid);
    ConsumeMatrix(H, I, region, 1.f, w.down_bias, a.x, true, ring, warp, lane);
    GridSync(stage_counters + stage, tid, a.trace, stage, stages), ++stage;
  }
  if (a.want_logits) {
    const float inv =
        LoadNormed(a.x, nullptr, a.final_norm, H, a.eps, region, red, tid, warp, lane);
    ConsumeMatrix(a.V, H, region, inv, nullptr, a.logits, false, ring, warp, lane);
  }
  if (a.trace) {
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
                                 optin - 1024);  // static shared memory stays below 1 KiB
    }
    if (err != cudaSuccess) return err;
    max_smem = optin - 1024;
  }
  int32_t region = RegionFloats(a);
  const int64_t fixed = int64_t{region} * 4;
  const int64_t slots = (max_smem - fixed) / (kSlotBytes + 16);
  if (slots < 2) return cudaErrorInvalidConfiguration;
  uint32_t slot_count = static_cast<uint32_t>(slots);
  const size_t smem = size_t{slot_count} * kSlotBytes + fixed + size_t{slot_count} * 16;
  cudaError_t err = cudaMemsetAsync(a.sync, 0, DecodeStepSyncWords(a.L, a.Hkv) * 4, stream);
  if (err != cudaSuccess) return err;
  DecodeStepArgs args = a;
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

int64_t DecodeStepSyncWords(int32_t L, int32_t Hkv) {
  return int64_t{kStagesPerLayer} * L + 2 + int64_t{L} * Hkv;
}

int64_t DecodeStepTraceWords(int32_t L, int32_t blocks) {
  return int64_t{kStagesPerLayer} * L * (blocks + 1) + 2;
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
