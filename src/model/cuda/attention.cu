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
// Prefill (chunks of many tokens): FlashAttention-2 tiles of 64 queries x
// 64 keys on the tensor cores (mma.sync bf16, float32 accumulate), online
// softmax in float32 in registers; each warp owns 16 query rows end to end.
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

// --------------------------------------------------------------- prefill

constexpr int kTileKeys = 64;
constexpr int kPrefillThreads = 128;  // 4 warps x 16 query rows

template <int D>
struct PrefillSmem {
  static constexpr int kLdb = D + 8;  // bf16 row stride of Q/K/V tiles (conflict-free)
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + size_t{kPrefillTileRows} * kLdb * 2;
  static constexpr size_t kStage = size_t{kTileKeys} * kLdb * 2 * 2;  // K and V of one tile
  static constexpr size_t kBytes = kK + 2 * kStage;                     // double-buffered
};

// 16-byte global -> shared copy that bypasses registers; `valid` false
// fills zeros (rows past the end: 0 * garbage may be NaN).
__device__ __forceinline__ void CopyAsync16(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CopyAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CopyAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ uint32_t PackBf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// d += a (16x16 bf16, row-major) * b (16x8 bf16, column-major), float32 accumulate.
__device__ __forceinline__ void Mma16816(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// FlashAttention-2 on mma.sync m16n8k16: each warp owns 16 query rows; the
// scores, probabilities and output accumulators stay in registers (the
// accumulator layout of S is the A-operand layout of P), only Q/K/V tiles
// go through shared memory. Lane l holds rows r0 = l/4 and r0 + 8 of its
// warp, columns 2*(l%4) + {0,1} of every 8-wide n-tile.
template <int D>
__global__ void __launch_bounds__(kPrefillThreads)
    PrefillAttentionKernel(AttentionArgs a, const PrefillTile* tiles) {
  using L = PrefillSmem<D>;
  constexpr int kLdb = L::kLdb;
  constexpr int kKSteps = D / 16;          // k-steps of Q K^T
  constexpr int kKeyTiles = kTileKeys / 8;  // n-tiles of S
  constexpr int kDimTiles = D / 8;          // n-tiles of O
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* q_s = reinterpret_cast<__nv_bfloat16*>(smem_raw + L::kQ);

  const PrefillTile tile = tiles[blockIdx.x];
  const int32_t h = blockIdx.y, kv_head = h / (a.Hq / a.Hkv);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int quad = lane / 4, pair = (lane % 4) * 2;
  AllowNextGrid();
  WaitForPriorGrid();  // q and the chunk's K/V come from the prologue kernel
  for (int i = tid; i < kPrefillTileRows * D / 2; i += kPrefillThreads) {
    const int r = i / (D / 2), d = (i % (D / 2)) * 2;
    float2 v = make_float2(0.f, 0.f);
    if (r < tile.rows) {
      v = *reinterpret_cast<const float2*>(
          a.qkv + static_cast<int64_t>(tile.row + r) * a.qkv_stride + h * D + d);
    }
    *reinterpret_cast<uint32_t*>(q_s + r * kLdb + d) = PackBf16(v.x, v.y);
  }
  __syncthreads();
  uint32_t qf[kKSteps][4];
  const __nv_bfloat16* q_w = q_s + warp * 16 * kLdb;
#pragma unroll
  for (int kk = 0; kk < kKSteps; ++kk) {
    qf[kk][0] = *reinterpret_cast<const uint32_t*>(q_w + quad * kLdb + kk * 16 + pair);
    qf[kk][1] = *reinterpret_cast<const uint32_t*>(q_w + (quad + 8) * kLdb + kk * 16 + pair);
    qf[kk][2] = *reinterpret_cast<const uint32_t*>(q_w + quad * kLdb + kk * 16 + 8 + pair);
    qf[kk][3] = *reinterpret_cast<const uint32_t*>(q_w + (quad + 8) * kLdb + kk * 16 + 8 + pair);
  }

  float o[kDimTiles][4];
#pragma unroll
  for (int n = 0; n < kDimTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m_row[2] = {-FLT_MAX, -FLT_MAX}, l_row[2] = {0.f, 0.f};  // rows quad, quad + 8
  const int32_t pos0 = tile.position + warp * 16 + quad;    // position of row quad
  const float qscale = a.scale * kLog2e;
  const int32_t last = tile.position + tile.rows - 1;
  const int32_t num_key_tiles = last / kTileKeys + 1;
  constexpr int kVecs = D / 8;  // 16-byte vectors per key row

  // K/V tile kt goes to stage kt % 2; tile kt + 1 loads while kt computes.
  auto load_tile = [&](int32_t kt) {
    __nv_bfloat16* ks = reinterpret_cast<__nv_bfloat16*>(smem_raw + L::kK + (kt % 2) * L::kStage);
    __nv_bfloat16* vs = ks + kTileKeys * kLdb;
    for (int i = tid; i < kTileKeys * kVecs; i += kPrefillThreads) {
      const int r = i / kVecs, c = i % kVecs;
      const int32_t key = kt * kTileKeys + r;
      const bool valid = key <= last;
      const __nv_bfloat16* k_row = KeyRow(a, tile.table_offset, valid ? key : 0, 0, kv_head);
      CopyAsync16(ks + r * kLdb + c * 8, k_row + c * 8, valid);
      CopyAsync16(vs + r * kLdb + c * 8, k_row + static_cast<int64_t>(a.Hkv) * a.B * D + c * 8,
                  valid);
    }
    CopyAsyncCommit();
  };
  load_tile(0);
  for (int32_t kt = 0; kt < num_key_tiles; ++kt) {
    if (kt + 1 < num_key_tiles) {
      load_tile(kt + 1);
      CopyAsyncWait<1>();  // tile kt has landed, kt + 1 may still fly
    } else {
      CopyAsyncWait<0>();
    }
    __syncthreads();
    const __nv_bfloat16* k_s =
        reinterpret_cast<const __nv_bfloat16*>(smem_raw + L::kK + (kt % 2) * L::kStage);
    const __nv_bfloat16* v_s = k_s + kTileKeys * kLdb;
    // Keys of this tile that no row of this warp can see: skip the tile.
    if (kt * kTileKeys <= tile.position + warp * 16 + 15) {

    float sc[kKeyTiles][4];
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) {
      sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
      const __nv_bfloat16* k_n = k_s + (n * 8 + quad) * kLdb + pair;
#pragma unroll
      for (int kk = 0; kk < kKSteps; ++kk) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(k_n + kk * 16);
        const uint32_t b1 = *reinterpret_cast<const uint32_t*>(k_n + kk * 16 + 8);
        Mma16816(sc[n], qf[kk], b0, b1);
      }
    }
    // Causal mask, scale to log2 units, row max over the 4 lanes of a row.
    float mx[2] = {-FLT_MAX, -FLT_MAX};
#pragma unroll
    for (int n = 0; n < kKeyTiles; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int32_t key = kt * kTileKeys + n * 8 + pair + (e & 1);
        const int32_t qpos = pos0 + (e >> 1) * 8;
        sc[n][e] = key <= qpos ? sc[n][e] * qscale : -FLT_MAX;
        mx[e >> 1] = fmaxf(mx[e >> 1], sc[n][e]);
      }
    }
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m_row[r], mx[r]);  // > -FLT_MAX: key 0 is visible to all
      alpha[r] = exp2f(m_row[r] - m_new);
      m_row[r] = m_new;
      l_row[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < kDimTiles; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
    // P = exp2(S - m) as the A operand of P V, 16 keys per k-step.
#pragma unroll
    for (int kk = 0; kk < kTileKeys / 16; ++kk) {
      float p[2][4];
#pragma unroll
      for (int half = 0; half < 2; ++half) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float s = sc[2 * kk + half][e];
          p[half][e] = s > -FLT_MAX ? exp2f(s - m_row[e >> 1]) : 0.f;
          l_row[e >> 1] += p[half][e];
        }
      }
      const uint32_t pa[4] = {PackBf16(p[0][0], p[0][1]), PackBf16(p[0][2], p[0][3]),
                              PackBf16(p[1][0], p[1][1]), PackBf16(p[1][2], p[1][3])};
      // B = V[16 keys][8 dims] column-major: each register holds two keys
      // of one dim.
      const __nv_bfloat16* v_k = v_s + (kk * 16 + pair) * kLdb + quad;
#pragma unroll
      for (int n = 0; n < kDimTiles; ++n) {
        const __nv_bfloat16* v_n = v_k + n * 8;
        __nv_bfloat162 b0, b1;
        b0.x = v_n[0];
        b0.y = v_n[kLdb];
        b1.x = v_n[8 * kLdb];
        b1.y = v_n[9 * kLdb];
        Mma16816(o[n], pa, *reinterpret_cast<uint32_t*>(&b0), *reinterpret_cast<uint32_t*>(&b1));
      }
    }
    }
    __syncthreads();  // the next iteration's load reuses this stage
  }

  // Row sums live spread over the 4 lanes of a row.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 1);
    l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = warp * 16 + quad + r * 8;
    if (row >= tile.rows) continue;
    const float inv = 1.f / l_row[r];
    uint16_t* out = a.out + static_cast<int64_t>(tile.row + row) * a.Hq * D + h * D + pair;
#pragma unroll
    for (int n = 0; n < kDimTiles; ++n) {
      *reinterpret_cast<uint32_t*>(out + n * 8) = PackBf16(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    }
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

template <int D>
cudaError_t PrefillFor(const AttentionArgs& a, const PrefillTile* tiles, int32_t num_tiles,
                       cudaStream_t stream) {
  constexpr size_t smem = PrefillSmem<D>::kBytes;
  static bool raised = false;
  if (!raised) {
    cudaError_t err = cudaFuncSetAttribute(PrefillAttentionKernel<D>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
    raised = true;
  }
  return LaunchChained(PrefillAttentionKernel<D>, dim3(num_tiles, a.Hq), dim3(kPrefillThreads),
                       smem, stream, a, tiles);
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

bool PrefillAttentionSupports(int32_t D) { return D == 32 || D == 64 || D == 128; }

cudaError_t LaunchPrefillAttention(const AttentionArgs& a, const PrefillTile* tiles,
                                   int32_t num_tiles, cudaStream_t stream) {
  switch (a.D) {
    case 32: return PrefillFor<32>(a, tiles, num_tiles, stream);
    case 64: return PrefillFor<64>(a, tiles, num_tiles, stream);
    case 128: return PrefillFor<128>(a, tiles, num_tiles, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace crescent::model::cuda
