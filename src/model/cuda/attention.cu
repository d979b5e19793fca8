// Paged attention over the bf16 KV pool (layout of kv_layout.h: per block
// [L][2][Hkv][B][D], so one (layer, kind, head) of a block is a contiguous
// [B][D] plane and a key row is D contiguous bf16).
//
// Decode (few new tokens per sequence): split-K over the context. Block
// (item, kv head, split) attends its keys for all Hq/Hkv query heads that
// share the KV head (K and V read once per KV head, GQA) in one pass with an
// online softmax, and either writes the normalised output (one split) or
// (o, max, sum) partials that the last block of the item merges.
//
// Prefill (chunks of many tokens) is in flash_prefill.cu.
#include <cuda_bf16.h>

#include <cfloat>

#include "model/cuda/device_helpers.cuh"
#include "model/cuda/kernels.h"

namespace crescent::model::cuda {
namespace {

constexpr int kDecodeThreads = 128;
constexpr int kMaxGroupAll = 8;  // query heads per KV head supported
constexpr int kDecodeUnroll = 4;  // K/V rows in flight per lane group
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ const __nv_bfloat16* KeyRow(const AttentionArgs& a, int32_t table_offset,
                                                       int32_t key, int32_t kind, int32_t kv_head) {
  const int64_t block = a.block_tables[table_offset + key / a.B];
  const int64_t slot = key % a.B;
  const int64_t block_elems = static_cast<int64_t>(a.L) * 2 * a.Hkv * a.B * a.D;
  return reinterpret_cast<const __nv_bfloat16*>(a.kv_pool) + block * block_elems +
         ((static_cast<int64_t>(a.layer) * 2 + kind) * a.Hkv + kv_head) * a.B * a.D + slot * a.D;
}

// ---------------------------------------------------------------- decode

// One pass over the split's keys with an online softmax per lane group
// (FlashDecoding): each key's K and V row are loaded together, so the
// kernel is a short chain of memory round trips (what decode at small
// batch waits on), then lane groups merge in shared memory and splits in
// the last block.
template <int D, int kMaxGroup>
__global__ void __launch_bounds__(kDecodeThreads)
    DecodeAttentionKernel(AttentionArgs a, const DecodeItem* items, int32_t splits,
                          int32_t split_len, float* partial, int32_t* counters) {
  constexpr int kLanes = D / 8;                     // lanes per key row (16 B each)
  constexpr int kGroups = kDecodeThreads / kLanes;  // lane groups, one key each at a time
  extern __shared__ float smem[];
  const DecodeItem item = items[blockIdx.x];
  const int32_t kv_head = blockIdx.y, split = blockIdx.z;
  const int32_t G = a.Hq / a.Hkv;
  const int32_t ctx = item.position + 1;
  const int32_t k_begin = split * split_len;
  if (k_begin >= ctx) return;  // no keys: the merge counts only splits that have some
  const int32_t k_end = min(ctx, k_begin + split_len);
  const int tid = threadIdx.x, group = tid / kLanes, lane = tid % kLanes;
  AllowNextGrid();
  WaitForPriorGrid();  // q and the newest K/V come from the prologue kernel

  // This lane's 8 dims of every query head of the group, in log2 units.
  float q[kMaxGroup][8];
  const float qscale = a.scale * kLog2e;
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= G) break;
    const float* src = a.qkv + static_cast<int64_t>(item.row) * a.qkv_stride +
                       (kv_head * G + g) * D + lane * 8;
    const float4 x0 = *reinterpret_cast<const float4*>(src);
    const float4 x1 = *reinterpret_cast<const float4*>(src + 4);
    q[g][0] = x0.x * qscale; q[g][1] = x0.y * qscale; q[g][2] = x0.z * qscale;
    q[g][3] = x0.w * qscale; q[g][4] = x1.x * qscale; q[g][5] = x1.y * qscale;
    q[g][6] = x1.z * qscale; q[g][7] = x1.w * qscale;
  }
  float m[kMaxGroup], l[kMaxGroup], acc[kMaxGroup][8];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    m[g] = -FLT_MAX;
    l[g] = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[g][j] = 0.f;
  }
  // The loop bound is uniform across the block so that the shuffles see
  // every lane of a group.
  for (int32_t base = k_begin; base < k_end; base += kGroups * kDecodeUnroll) {
    float kf[kDecodeUnroll][8], vf[kDecodeUnroll][8];
#pragma unroll
    for (int u = 0; u < kDecodeUnroll; ++u) {
      const int32_t key = base + u * kGroups + group;
      if (key < k_end) {
        const __nv_bfloat16* k_row = KeyRow(a, item.table_offset, key, 0, kv_head);
        LoadBf16x8(k_row + lane * 8, kf[u]);
        // V of the same slot: one plane (Hkv * B * D elements) further on.
        LoadBf16x8(k_row + static_cast<int64_t>(a.Hkv) * a.B * D + lane * 8, vf[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kDecodeUnroll; ++u) {
      const bool valid = base + u * kGroups + group < k_end;
#pragma unroll
      for (int g = 0; g < kMaxGroup; ++g) {
        if (g >= G) break;
        float dot = 0.f;
#pragma unroll
        for (int j = 0; j < 8; ++j) dot += q[g][j] * (valid ? kf[u][j] : 0.f);
#pragma unroll
        for (int o = kLanes / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        if (!valid) continue;
        const float m_new = fmaxf(m[g], dot);
        const float scale = exp2f(m[g] - m_new), p = exp2f(dot - m_new);
        l[g] = l[g] * scale + p;
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[g][j] = acc[g][j] * scale + p * vf[u][j];
        m[g] = m_new;
      }
    }
  }

  // Merge the lane groups: smem [kGroups][G] max and sum, [kGroups][G][D] acc.
  float* m_s = smem;
  float* l_s = m_s + kGroups * kMaxGroup;
  float* acc_s = l_s + kGroups * kMaxGroup;
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (g >= G) break;
    if (lane == 0) {
      m_s[group * kMaxGroup + g] = m[g];
      l_s[group * kMaxGroup + g] = l[g];
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) acc_s[(group * G + g) * D + lane * 8 + j] = acc[g][j];
  }
  __syncthreads();
  for (int i = tid; i < G * D; i += kDecodeThreads) {
    const int g = i / D, d = i % D;
    float mx = -FLT_MAX;
    for (int k = 0; k < kGroups; ++k) mx = fmaxf(mx, m_s[k * kMaxGroup + g]);
    float o = 0.f, sum = 0.f;
    for (int k = 0; k < kGroups; ++k) {
      const float w = exp2f(m_s[k * kMaxGroup + g] - mx);  // 0 for groups without keys
      o += w * acc_s[(k * G + g) * D + d];
      sum += w * l_s[k * kMaxGroup + g];
    }
    const int32_t h = kv_head * G + g;
    if (splits == 1) {
      a.out[static_cast<int64_t>(item.row) * a.Hq * D + h * D + d] =
          __bfloat16_as_ushort(__float2bfloat16(o / sum));
    } else {
      float* p = partial + ((static_cast<int64_t>(blockIdx.x) * a.Hq + h) * splits + split) * (D + 2);
      p[d] = o;
      if (d == 0) {
        p[D] = mx;
        p[D + 1] = sum;
      }
    }
  }
  if (splits == 1) return;

  // The last split block of this (item, kv head) to finish merges all
  // splits (saves a combine launch); its counter goes back to 0 for the
  // next launch.
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  const int32_t used = (ctx + split_len - 1) / split_len;
  if (tid == 0) {
    int32_t* counter = counters + static_cast<int64_t>(blockIdx.x) * a.Hkv + kv_head;
    last = atomicAdd(counter, 1) == used - 1;
    if (last) *counter = 0;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int i = tid; i < G * D; i += kDecodeThreads) {
    const int g = i / D, d = i % D;
    const int32_t h = kv_head * G + g;
    const float* p = partial + (static_cast<int64_t>(blockIdx.x) * a.Hq + h) * splits * (D + 2);
    float mx = -FLT_MAX;
    for (int s = 0; s < used; ++s) mx = fmaxf(mx, __ldcg(p + s * (D + 2) + D));
    float o = 0.f, sum = 0.f;
    for (int s = 0; s < used; ++s) {
      const float w = exp2f(__ldcg(p + s * (D + 2) + D) - mx);
      sum += w * __ldcg(p + s * (D + 2) + D + 1);
      o += w * __ldcg(p + s * (D + 2) + d);
    }
    a.out[static_cast<int64_t>(item.row) * a.Hq * D + h * D + d] =
        __bfloat16_as_ushort(__float2bfloat16(o / sum));
  }
}

// Dynamic shared memory of a decode block: per lane group, max and sum of
// every head and the [G][D] accumulators, for the merge of the groups.
size_t DecodeAttentionSmem(int32_t D, int32_t group) {
  const size_t groups = kDecodeThreads / (D / 8);
  return sizeof(float) * (2 * groups * kMaxGroupAll + groups * group * D);
}

template <int D, int kMaxGroup>
cudaError_t DecodeLaunch(const AttentionArgs& a, const DecodeItem* items, int32_t num_items,
                         int32_t splits, int32_t split_len, float* partial, int32_t* counters,
                         cudaStream_t stream) {
  const size_t smem = DecodeAttentionSmem(D, a.Hq / a.Hkv);
  return LaunchChained(DecodeAttentionKernel<D, kMaxGroup>, dim3(num_items, a.Hkv, splits),
                       dim3(kDecodeThreads), smem, stream, a, items, splits, split_len, partial,
                       counters);
}

// Register arrays are sized by the group bound: 2, 4 or 8 query heads per
// KV head (fewer registers, more resident blocks for the common GQA ratios).
template <int D>
cudaError_t DecodeFor(const AttentionArgs& a, const DecodeItem* items, int32_t num_items,
                      int32_t splits, int32_t split_len, float* partial, int32_t* counters,
                      cudaStream_t stream) {
  const int32_t group = a.Hq / a.Hkv;
  if (group <= 2) {
    return DecodeLaunch<D, 2>(a, items, num_items, splits, split_len, partial, counters, stream);
  }
  if (group <= 4) {
    return DecodeLaunch<D, 4>(a, items, num_items, splits, split_len, partial, counters, stream);
  }
  return DecodeLaunch<D, 8>(a, items, num_items, splits, split_len, partial, counters, stream);
}

}  // namespace

bool DecodeAttentionSupports(int32_t D, int32_t group) {
  return (D == 8 || D == 16 || D == 32 || D == 64 || D == 128 || D == 256) && group >= 1 &&
         group <= kMaxGroupAll;
}


cudaError_t LaunchDecodeAttention(const AttentionArgs& a, const DecodeItem* items,
                                  int32_t num_items, int32_t splits, int32_t split_len,
                                  float* partial, int32_t* counters, cudaStream_t stream) {
  switch (a.D) {
    case 8: return DecodeFor<8>(a, items, num_items, splits, split_len, partial, counters, stream);
    case 16: return DecodeFor<16>(a, items, num_items, splits, split_len, partial, counters, stream);
    case 32: return DecodeFor<32>(a, items, num_items, splits, split_len, partial, counters, stream);
    case 64: return DecodeFor<64>(a, items, num_items, splits, split_len, partial, counters, stream);
    case 128: return DecodeFor<128>(a, items, num_items, splits, split_len, partial, counters, stream);
    case 256: return DecodeFor<256>(a, items, num_items, splits, split_len, partial, counters, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace crescent::model::cuda
