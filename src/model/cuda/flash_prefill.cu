// Prefill attention (chunks of many query tokens) over the paged bf16 KV
// pool: FlashAttention-2 on mma.sync m16n8k16 (bf16 in, float32
// accumulate), operands fed by ldmatrix, causal, GQA-shared K/V tiles.
//
// A block takes one tile of kPrefillTileRows (64) query tokens and HB query
// heads that share one KV head (HB divides Hq/Hkv), so every K/V tile it
// loads feeds 64 * HB query rows: 4 warps per head, 16 query rows per warp
// kept end to end in registers (Q fragments, scores, probabilities and the
// output accumulators). K/V tiles of 64 keys stream through shared memory,
// three deep with cp.async (one barrier per tile); key tiles past a warp's
// last query are skipped, and the causal mask is applied only on tiles
// that straddle the diagonal. The grid is (head groups, tiles) with tiles sorted longest
// first (cuda_forward.cc), so the blocks with most keys start first on
// every head and the short ones fill in behind them.
#include <cuda_bf16.h>

#include <cfloat>

#include "model/cuda/device_helpers.cuh"
#include "model/cuda/kernels.h"

namespace crescent::model::cuda {
namespace {

constexpr int kKeys = 64;                 // keys per K/V tile
constexpr int kTokens = kPrefillTileRows;  // query tokens per block
constexpr float kLog2e = 1.4426950408889634f;

template <int D, int HB>
struct FlashLayout {
  static constexpr int kWarps = 4 * HB;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kLdb = D + 8;  // bf16 row stride: ldmatrix rows hit distinct banks
  static constexpr size_t kQBytes = size_t{kTokens} * HB * kLdb * 2;
  static constexpr size_t kStage = size_t{kKeys} * kLdb * 2 * 2;  // K and V of one tile
  // K/V tiles in shared memory: kt computing, kt + 1 landing, kt + 2 issued.
  static constexpr int kStages = 3;
  static constexpr size_t kBytes = kQBytes + kStages * kStage;
};

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; `valid` false fills zeros (keys past the
// end: 0 * garbage may be NaN).
__device__ __forceinline__ void CopyAsync16(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(SmemAddr(smem)),
               "l"(gmem), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void CopyAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CopyAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
}
__device__ __forceinline__ void LdMatrixX4Trans(uint32_t* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(SmemAddr(p)));
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

// Lane l of a warp holds, in every accumulator tile, rows l/4 and l/4 + 8
// and columns 2*(l%4) + {0,1}: the C layout of S is the A layout of P, so
// P never leaves registers.
template <int D, int HB>
__global__ void __launch_bounds__(FlashLayout<D, HB>::kThreads, 1)
    FlashPrefillKernel(AttentionArgs a, const PrefillTile* tiles) {
  using L = FlashLayout<D, HB>;
  constexpr int kLdb = L::kLdb;
  constexpr int kKSteps = D / 16;       // k-steps of Q K^T
  constexpr int kKeyTiles = kKeys / 8;  // 8-wide n-tiles of S
  constexpr int kDimTiles = D / 8;      // 8-wide n-tiles of O
  constexpr int kVecs = D / 8;          // 16-byte vectors per key row
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __nv_bfloat16* q_s = reinterpret_cast<__nv_bfloat16*>(smem_raw);

  const PrefillTile tile = tiles[blockIdx.y];
  const int32_t G = a.Hq / a.Hkv;
  const int32_t h0 = blockIdx.x * HB;  // first query head of the block
  const int32_t kv_head = h0 / G;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int quad = lane / 4, pair = (lane % 4) * 2;
  const int head_in_block = warp / 4, row_in_head = (warp % 4) * 16;
  const int32_t h = h0 + head_in_block;
  const int32_t last = tile.position + tile.rows - 1;  // last query position of the tile
  const int32_t num_key_tiles = last / kKeys + 1;

  // Paged K/V addresses: a key tile spans kKeys / B blocks of the table.
  const int64_t block_elems = static_cast<int64_t>(a.L) * 2 * a.Hkv * a.B * D;
  const int64_t plane = static_cast<int64_t>(a.Hkv) * a.B * D;  // K plane -> V plane
  const int64_t head_off = (static_cast<int64_t>(a.layer) * 2 * a.Hkv + kv_head) * a.B * D;
  const __nv_bfloat16* pool = reinterpret_cast<const __nv_bfloat16*>(a.kv_pool);
  const int32_t* table = a.block_tables + tile.table_offset;
  auto load_tile = [&](int32_t kt) {
    __nv_bfloat16* ks =
        reinterpret_cast<__nv_bfloat16*>(smem_raw + L::kQBytes + (kt % L::kStages) * L::kStage);
    __nv_bfloat16* vs = ks + kKeys * kLdb;
    constexpr int kPerThread = (kKeys * kVecs + L::kThreads - 1) / L::kThreads;
#pragma unroll
    for (int j = 0; j < kPerThread; ++j) {
      const int i = tid + j * L::kThreads;
      if (kKeys * kVecs % L::kThreads != 0 && i >= kKeys * kVecs) break;
      const int r = i / kVecs, c = i % kVecs;
      const int32_t key = kt * kKeys + r;
      const bool valid = key <= last;
      const int32_t k = valid ? key : 0;
      const __nv_bfloat16* k_row =
          pool + table[k / a.B] * block_elems + head_off + (k % a.B) * D + c * 8;
      CopyAsync16(ks + r * kLdb + c * 8, k_row, valid);
      CopyAsync16(vs + r * kLdb + c * 8, k_row + plane, valid);
    }
    CopyAsyncCommit();
  };

  AllowNextGrid();
  WaitForPriorGrid();  // q and the chunk's K/V come from the prologue kernel
  load_tile(0);
  if (num_key_tiles > 1) load_tile(1);
  // Q rows of the block: [head_in_block][token], bf16 as the prologue left
  // them, or float32 rounded here.
  if (a.q16 != nullptr) {
    const __nv_bfloat16* q16 = reinterpret_cast<const __nv_bfloat16*>(a.q16);
    for (int i = tid; i < kTokens * HB * kVecs; i += L::kThreads) {
      const int r = i / kVecs, d = (i % kVecs) * 8;
      const int hb = r / kTokens, t = r % kTokens;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (t < tile.rows) {
        v = *reinterpret_cast<const uint4*>(q16 + static_cast<int64_t>(tile.row + t) * a.Hq * D +
                                            (h0 + hb) * D + d);
      }
      *reinterpret_cast<uint4*>(q_s + r * kLdb + d) = v;
    }
  } else {
    for (int i = tid; i < kTokens * HB * (D / 4); i += L::kThreads) {
      const int r = i / (D / 4), d = (i % (D / 4)) * 4;
      const int hb = r / kTokens, t = r % kTokens;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (t < tile.rows) {
        v = *reinterpret_cast<const float4*>(a.qkv +
                                             static_cast<int64_t>(tile.row + t) * a.qkv_stride +
                                             (h0 + hb) * D + d);
      }
      uint2 packed;
      packed.x = PackBf16(v.x, v.y);
      packed.y = PackBf16(v.z, v.w);
      *reinterpret_cast<uint2*>(q_s + r * kLdb + d) = packed;
    }
  }
  __syncthreads();
  const __nv_bfloat16* q_w = q_s + (head_in_block * kTokens + row_in_head) * kLdb +
                             ((lane % 8) + ((lane / 8) % 2) * 8) * kLdb + (lane / 16) * 8;
  uint32_t qf[kKSteps][4];
#pragma unroll
  for (int kk = 0; kk < kKSteps; ++kk) LdMatrixX4(qf[kk], q_w + kk * 16);

  float o[kDimTiles][4];
#pragma unroll
  for (int n = 0; n < kDimTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m_row[2] = {-FLT_MAX, -FLT_MAX}, l_row[2] = {0.f, 0.f};  // rows quad, quad + 8
  const int32_t pos_first = tile.position + row_in_head;  // first query position of the warp
  const int32_t pos0 = pos_first + quad;                   // of this lane's row `quad`
  const float c = a.scale * kLog2e;                         // scores -> log2 units

  // ldmatrix lane offsets (elements) within a stage.
  // K (B of Q K^T, keys as rows): matrices (keys 0-7 | 8-15) x (dims 0-7 | 8-15).
  const int k_lane = ((lane % 8) + (lane / 16) * 8) * kLdb + ((lane / 8) % 2) * 8;
  // V (B of P V, transposed): matrices (keys 0-7 | 8-15) x (dims 0-7 | 8-15).
  const int v_lane = ((lane % 8) + ((lane / 8) % 2) * 8) * kLdb + (lane / 16) * 8;

  for (int32_t kt = 0; kt < num_key_tiles; ++kt) {
    // Tiles kt and kt + 1 are in flight; kt + 2 goes to the stage that held
    // kt - 1, free once every warp has passed this barrier (one barrier per
    // tile).
    if (kt + 1 < num_key_tiles) {
      CopyAsyncWait<1>();
    } else {
      CopyAsyncWait<0>();
    }
    __syncthreads();
    if (kt + 2 < num_key_tiles) load_tile(kt + 2);
    const __nv_bfloat16* k_s =
        reinterpret_cast<const __nv_bfloat16*>(smem_raw + L::kQBytes +
                                               (kt % L::kStages) * L::kStage);
    const __nv_bfloat16* v_s = k_s + kKeys * kLdb;
    const int32_t key0 = kt * kKeys;
    // Keys that no row of this warp can see (or rows past the chunk): skip.
    if (key0 <= pos_first + 15 && row_in_head < tile.rows) {
      float sc[kKeyTiles][4];
#pragma unroll
      for (int n = 0; n < kKeyTiles; ++n) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kKSteps; ++kk) {
        const uint32_t* qa = qf[kk];
#pragma unroll
        for (int n = 0; n < kKeyTiles; n += 2) {
          uint32_t b[4];
          LdMatrixX4(b, k_s + k_lane + n * 8 * kLdb + kk * 16);
          Mma16816(sc[n], qa, b[0], b[1]);
          Mma16816(sc[n + 1], qa, b[2], b[3]);
        }
      }
      // Causal mask only where the tile reaches past the warp's first row.
      if (key0 + kKeys - 1 > pos_first) {
#pragma unroll
        for (int n = 0; n < kKeyTiles; ++n) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int32_t key = key0 + n * 8 + pair + (e & 1);
            if (key > pos0 + (e >> 1) * 8) sc[n][e] = -FLT_MAX;
          }
        }
      }
      float mx[2] = {m_row[0], m_row[1]};
#pragma unroll
      for (int n = 0; n < kKeyTiles; ++n) {
        mx[0] = fmaxf(mx[0], fmaxf(sc[n][0], sc[n][1]));
        mx[1] = fmaxf(mx[1], fmaxf(sc[n][2], sc[n][3]));
      }
      float alpha[2], mc[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        // Key 0 is visible to every row, so after the first tile m > -FLT_MAX.
        alpha[r] = exp2f((m_row[r] - mx[r]) * c);
        m_row[r] = mx[r];
        mc[r] = mx[r] * c;
        l_row[r] *= alpha[r];
      }
#pragma unroll
      for (int n = 0; n < kDimTiles; ++n) {
        o[n][0] *= alpha[0];
        o[n][1] *= alpha[0];
        o[n][2] *= alpha[1];
        o[n][3] *= alpha[1];
      }
      // P = exp2(S * c - m * c) as the A operand of P V, 16 keys per k-step;
      // masked scores give exp2(-huge) = 0.
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        float p[2][4];
#pragma unroll
        for (int half = 0; half < 2; ++half) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            p[half][e] = exp2f(fmaf(sc[2 * kk + half][e], c, -mc[e >> 1]));
            l_row[e >> 1] += p[half][e];
          }
        }
        const uint32_t pa[4] = {PackBf16(p[0][0], p[0][1]), PackBf16(p[0][2], p[0][3]),
                                PackBf16(p[1][0], p[1][1]), PackBf16(p[1][2], p[1][3])};
#pragma unroll
        for (int n = 0; n < kDimTiles; n += 2) {
          uint32_t b[4];
          LdMatrixX4Trans(b, v_s + v_lane + kk * 16 * kLdb + n * 8);
          Mma16816(o[n], pa, b[0], b[1]);
          Mma16816(o[n + 1], pa, b[2], b[3]);
        }
      }
    }
  }

  // Row sums are spread over the 4 lanes of a row.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 1);
    l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_in_head + quad + r * 8;
    if (row >= tile.rows) continue;
    const float inv = 1.f / l_row[r];
    uint16_t* out = a.out + static_cast<int64_t>(tile.row + row) * a.Hq * D + h * D + pair;
#pragma unroll
    for (int n = 0; n < kDimTiles; ++n) {
      *reinterpret_cast<uint32_t*>(out + n * 8) =
          PackBf16(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    }
  }
}

template <int D, int HB>
cudaError_t FlashLaunch(const AttentionArgs& a, const PrefillTile* tiles, int32_t num_tiles,
                        cudaStream_t stream) {
  using L = FlashLayout<D, HB>;
  static bool raised = false;
  if (!raised) {
    const cudaError_t err = cudaFuncSetAttribute(
        FlashPrefillKernel<D, HB>, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kBytes);
    if (err != cudaSuccess) return err;
    raised = true;
  }
  return LaunchChained(FlashPrefillKernel<D, HB>, dim3(a.Hq / HB, num_tiles), dim3(L::kThreads),
                       L::kBytes, stream, a, tiles);
}

// Heads per block: the largest of 4, 2, 1 that divides the group and keeps
// the block within the register file (head_dim 128: 8 warps of ~216
// registers; smaller heads: 16 warps of <= 128).
template <int D>
cudaError_t FlashFor(const AttentionArgs& a, const PrefillTile* tiles, int32_t num_tiles,
                     cudaStream_t stream) {
  const int32_t G = a.Hq / a.Hkv;
  if constexpr (D < 128) {
    if (G % 4 == 0) return FlashLaunch<D, 4>(a, tiles, num_tiles, stream);
  }
  if (G % 2 == 0) return FlashLaunch<D, 2>(a, tiles, num_tiles, stream);
  return FlashLaunch<D, 1>(a, tiles, num_tiles, stream);
}

}  // namespace

bool PrefillAttentionSupports(int32_t D) { return D == 32 || D == 64 || D == 128; }

cudaError_t LaunchPrefillAttention(const AttentionArgs& a, const PrefillTile* tiles,
                                   int32_t num_tiles, cudaStream_t stream) {
  switch (a.D) {
    case 32: return FlashFor<32>(a, tiles, num_tiles, stream);
    case 64: return FlashFor<64>(a, tiles, num_tiles, stream);
    case 128: return FlashFor<128>(a, tiles, num_tiles, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace crescent::model::cuda
