// The attention stage of the persistent decode step (decode_step.cu):
// the new token's q/k/v prepared (q/k-norm, RoPE, KV write), its attention
// over one split of the context per (KV head, split) item, and the merge of
// a KV head's splits by the block that finishes its last split.
#pragma once

#include <cuda_bf16.h>

#include <cfloat>

#include "model/cuda/decode_step_device.cuh"

namespace crescent::model::cuda::step {

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

// att_out[h][d] for the G query heads of `kvh`: its splits' partials merged
// (online, kMergeBatch splits per round of loads). After the acquire of
// the head's count.
template <int D>
__device__ void MergeSplits(const DecodeStepArgs& a, int32_t kvh, int32_t G, int32_t splits,
                            int32_t smax, uint64_t* att_out, uint32_t tag, int tid) {
  for (int32_t i = tid; i < G * D; i += kConsumers) {
    const int32_t h = kvh * G + i / D, d = i % D;
    float mx = -FLT_MAX, sum = 0.f, o = 0.f;
    for (int32_t s0 = 0; s0 < splits; s0 += kMergeBatch) {
      float ms[kMergeBatch], ls[kMergeBatch], os[kMergeBatch];
#pragma unroll
      for (int j = 0; j < kMergeBatch; ++j) {
        ms[j] = -FLT_MAX;
        ls[j] = os[j] = 0.f;
        if (s0 + j < splits) {
          const float* p = a.partial + (int64_t{h} * smax + s0 + j) * (D + 2);
          ms[j] = __ldcg(p + D);
          ls[j] = __ldcg(p + D + 1);
          os[j] = __ldcg(p + d);
        }
      }
      float cm = mx;
#pragma unroll
      for (int j = 0; j < kMergeBatch; ++j) cm = fmaxf(cm, ms[j]);
      const float old = exp2f(mx - cm);
      sum *= old;
      o *= old;
#pragma unroll
      for (int j = 0; j < kMergeBatch; ++j) {
        const float wj = exp2f(ms[j] - cm);
        sum += wj * ls[j];
        o += wj * os[j];
      }
      mx = cm;
    }
    StoreTagged(att_out + int64_t{h} * D + d, o / sum, tag);
  }
}

// Attention of the new token over split `split` of KV head `kvh`, for its
// G query heads, from the tagged q/k/v words `qkv_in` (each read waits for
// its value): writes the unnormalised output and the softmax max and sum
// to partial[h][split]; the block that finishes the head's last split
// merges them into the tagged attention output `att_out` [Hq][D]. The
// split holding the new position first computes its K and V (k-norm, RoPE)
// and stores them.
template <int D, int kG>
__device__ void AttentionStage(const DecodeStepArgs& a, const StepLayer& w, int32_t layer,
                               int32_t pos, const uint64_t* qkv_in, uint64_t* att_out,
                               uint32_t tag, float* region, const KvRegs<D>& pre, int tid,
                               int stage) {
  __shared__ uint32_t last_split;
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
      WarpLoadTagged2(valid ? qkv_in + col + i : nullptr,
                      valid ? qkv_in + col + i + kHalf : nullptr, tag, &lo, &hi, lane,
                      a.poll_sleep_ns);
      if (valid) {
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
    TraceStage(a.trace, stage, false, tid);

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
    // Count the split in (release: its partial before the count; the first
    // split adds the missing ones, so that every head's count grows by
    // exactly smax per layer); the block that completes the count merges.
    ConsumerSync();
    if (tid == 0) {
      const uint64_t add = split == 0 ? smax - splits + 1 : 1;
      const uint64_t old = AtomicAddAcqRel(a.head_counters + kvh, add);
      last_split = (old + add) % static_cast<uint64_t>(smax) == 0;
    }
    ConsumerSync();
    if (last_split) MergeSplits<D>(a, kvh, G, splits, smax, att_out, tag, tid);
  }
}

}  // namespace crescent::model::cuda::step
