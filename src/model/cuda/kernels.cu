// Element-wise and row-wise kernels of the forward pass: embedding, RoPE
// tables, residual add fused with RMSNorm, the q/k/v prologue (bias,
// q/k-norm, RoPE, KV write into paged blocks) and SwiGLU. All are
// memory-bound; each launcher's comment in kernels.h states its bytes.
#include <cuda_bf16.h>

#include "model/cuda/device_helpers.cuh"
#include "model/cuda/kernels.h"

namespace crescent::model::cuda {
namespace {

constexpr int kNormThreads = 256;

__global__ void EmbedKernel(const int32_t* ids, const __nv_bfloat16* embed, int32_t H, float* x) {
  const int64_t t = blockIdx.x;
  const __nv_bfloat16* row = embed + static_cast<int64_t>(ids[t]) * H;
  for (int32_t i = threadIdx.x; i < H; i += blockDim.x) x[t * H + i] = __bfloat162float(row[i]);
}

__global__ void RopeTablesKernel(const int32_t* positions, const float* inv_freq, int32_t T,
                                 int32_t half, float* cos_out, float* sin_out) {
  const int64_t n = static_cast<int64_t>(T) * half;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / half;
    const int32_t f = static_cast<int32_t>(i % half);
    // float32 product as torch computes it, then cos/sin in double rounded
    // to float: bit-identical to the CPU backend's RopeCosSin.
    const float angle = __fmul_rn(static_cast<float>(positions[t]), inv_freq[f]);
    double s, c;
    sincos(static_cast<double>(angle), &s, &c);
    cos_out[i] = static_cast<float>(c);
    sin_out[i] = static_cast<float>(s);
  }
}

__global__ void AddRmsNormKernel(float* x, const float* delta, const float* delta_bias,
                                 const float* weight, const int32_t* gather, int32_t H, float eps,
                                 __nv_bfloat16* out) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const int64_t s = gather ? gather[r] : r;
  float* xr = x + s * H;
  float sum_sq = 0.f;
  for (int32_t i = threadIdx.x; i < H; i += blockDim.x) {
    float v = xr[i];
    if (delta) {
      v += delta[s * H + i] + (delta_bias ? delta_bias[i] : 0.f);
      xr[i] = v;
    }
    sum_sq += v * v;
  }
  const float total = BlockSum(sum_sq, scratch);
  const float inv = rsqrtf(total / static_cast<float>(H) + eps);
  for (int32_t i = threadIdx.x; i < H; i += blockDim.x) {
    out[r * H + i] = __float2bfloat16(xr[i] * inv * weight[i]);
  }
}

// One warp per row for H a multiple of 128 up to 128 * kMaxVec4: the row
// stays in registers between the sum of squares and the scaling (16-byte
// loads and stores, no block barriers). 8 rows per block.
constexpr int kNormRowsPerBlock = 8;
template <int kMaxVec4>
__global__ void __launch_bounds__(kNormRowsPerBlock * 32)
    AddRmsNormWarpKernel(float* x, const float* delta, const float* delta_bias,
                         const float* weight, const int32_t* gather, int32_t rows, int32_t H,
                         float eps, __nv_bfloat16* out) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kNormRowsPerBlock + threadIdx.x / 32;
  if (r >= rows) return;
  const int lane = threadIdx.x % 32, n4 = H / 128;
  const int64_t s = gather ? gather[r] : r;
  float4* xr = reinterpret_cast<float4*>(x + s * H);
  float4 v[kMaxVec4];
  float sum_sq = 0.f;
#pragma unroll
  for (int j = 0; j < kMaxVec4; ++j) {
    if (j >= n4) break;
    const int i = j * 32 + lane;  // float4 index in the row
    v[j] = xr[i];
    if (delta) {
      const float4 d = reinterpret_cast<const float4*>(delta + s * H)[i];
      float4 b = make_float4(0.f, 0.f, 0.f, 0.f);
      if (delta_bias) b = reinterpret_cast<const float4*>(delta_bias)[i];
      v[j].x += d.x + b.x;
      v[j].y += d.y + b.y;
      v[j].z += d.z + b.z;
      v[j].w += d.w + b.w;
      xr[i] = v[j];
    }
    sum_sq += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
  }
  const float inv = rsqrtf(WarpSum(sum_sq) / static_cast<float>(H) + eps);
#pragma unroll
  for (int j = 0; j < kMaxVec4; ++j) {
    if (j >= n4) break;
    const int i = j * 32 + lane;
    const float4 w = reinterpret_cast<const float4*>(weight)[i];
    uint2 packed;
    *reinterpret_cast<__nv_bfloat162*>(&packed.x) =
        __floats2bfloat162_rn(v[j].x * inv * w.x, v[j].y * inv * w.y);
    *reinterpret_cast<__nv_bfloat162*>(&packed.y) =
        __floats2bfloat162_rn(v[j].z * inv * w.z, v[j].w * inv * w.w);
    reinterpret_cast<uint2*>(out + r * H)[i] = packed;
  }
}

// grid (T, ceil((Hq + 2*Hkv) / kPrologueHeads)); each head gets `per_head`
// threads (a multiple of 32, >= D/2), thread i < D/2 owns the rotate-half
// pair (i, i+D/2). Several heads per block: one head of 64 threads per
// block made prefill launch ~65k tiny blocks per layer.
constexpr int kPrologueHeads = 4;
__global__ void QkvPrologueKernel(QkvPrologueArgs a, int32_t per_head) {
  __shared__ float scratch[32];
  const int32_t t = blockIdx.x, half = a.D / 2;
  const int32_t local = threadIdx.x / per_head, i = threadIdx.x % per_head;
  const int32_t head = blockIdx.y * kPrologueHeads + local;
  const int32_t heads = a.Hq + 2 * a.Hkv;
  const int32_t qd = a.Hq * a.D, kd = a.Hkv * a.D;
  const int64_t stride = qd + 2 * kd;
  const int32_t col = head * a.D;  // column of this head in the fused q/k/v row
  float* row = a.qkv + t * stride + col;
  const bool active = i < half && head < heads;
  AllowNextGrid();
  WaitForPriorGrid();  // qkv comes from the projection before
  float lo = 0.f, hi = 0.f;
  if (active) {
    lo = row[i];
    hi = row[i + half];
    if (a.qkv_bias) {
      lo += a.qkv_bias[col + i];
      hi += a.qkv_bias[col + i + half];
    }
  }
  const bool is_q = head < a.Hq, is_k = !is_q && head < a.Hq + a.Hkv;
  const float* norm = is_q ? a.q_norm : (is_k ? a.k_norm : nullptr);
  // Per-head sum of squares: warps never straddle heads.
  const float warp_sum = WarpSum(lo * lo + hi * hi);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = warp_sum;
  __syncthreads();
  if (norm && active) {
    float total = 0.f;
    for (int w = 0; w < per_head / 32; ++w) total += scratch[local * (per_head / 32) + w];
    const float inv = rsqrtf(total / static_cast<float>(a.D) + a.eps);
    lo = lo * inv * norm[i];
    hi = hi * inv * norm[i + half];
  }
  if (!active) return;
  if (is_q || is_k) {
    const float c = a.cos_tab[static_cast<int64_t>(t) * half + i];
    const float s = a.sin_tab[static_cast<int64_t>(t) * half + i];
    const float rl = lo * c - hi * s, rh = hi * c + lo * s;
    lo = rl;
    hi = rh;
  }
  if (is_q) {
    row[i] = lo;
    row[i + half] = hi;
    return;
  }
  const int32_t kind = is_k ? 0 : 1;
  const int32_t kv_head = is_k ? head - a.Hq : head - a.Hq - a.Hkv;
  const int32_t slot_global = a.slots[t];
  const int64_t block = slot_global / a.B, slot = slot_global % a.B;
  const int64_t block_elems = static_cast<int64_t>(a.L) * 2 * a.Hkv * a.B * a.D;
  __nv_bfloat16* dst = reinterpret_cast<__nv_bfloat16*>(a.kv_pool) + block * block_elems +
                       ((static_cast<int64_t>(a.layer) * 2 + kind) * a.Hkv + kv_head) * a.B * a.D +
                       slot * a.D;
  dst[i] = __float2bfloat16(lo);
  dst[i + half] = __float2bfloat16(hi);
}

__global__ void SwiGluKernel(const float* gu, const float* bias, int32_t T, int32_t I,
                             __nv_bfloat16* act) {
  const int64_t n = static_cast<int64_t>(T) * I;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = k / I, i = k % I;
    float g = gu[t * 2 * I + i], u = gu[t * 2 * I + I + i];
    if (bias) {
      g += bias[i];
      u += bias[I + i];
    }
    act[k] = __float2bfloat16(g / (1.f + __expf(-g)) * u);
  }
}

// One warp per (token, head): lane j holds the rotate-half pairs (2j,
// 2j + 1) and their partners at + D/2 (kPairs such pairs per lane group of
// 32), so the per-head RMSNorm is one warp reduction.
constexpr int kPrologueWarps = 8;
__global__ void __launch_bounds__(kPrologueWarps * 32)
    QkvPrologueBf16Kernel(QkvPrologueArgs a, const __nv_bfloat16* qkv16, __nv_bfloat16* q16) {
  const int32_t heads = a.Hq + 2 * a.Hkv;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kPrologueWarps + threadIdx.x / 32;
  if (item >= static_cast<int64_t>(a.T) * heads) return;
  const int lane = threadIdx.x % 32;
  const int32_t t = static_cast<int32_t>(item / heads), head = static_cast<int32_t>(item % heads);
  const int32_t half = a.D / 2, qd = a.Hq * a.D, kd = a.Hkv * a.D;
  const int32_t col = head * a.D;
  const __nv_bfloat16* row = qkv16 + static_cast<int64_t>(t) * (qd + 2 * kd) + col;
  constexpr int kMaxPairs = 2;  // D <= 256: half / 2 <= 64 bf16x2 per lane group of 32
  float lo[kMaxPairs][2], hi[kMaxPairs][2];
  float sum_sq = 0.f;
#pragma unroll
  for (int k = 0; k < kMaxPairs; ++k) {
    const int32_t i = 2 * (lane + 32 * k);
    lo[k][0] = lo[k][1] = hi[k][0] = hi[k][1] = 0.f;
    if (i < half) {
      const float2 l = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(row + i));
      const float2 h = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(row + i + half));
      lo[k][0] = l.x;
      lo[k][1] = l.y;
      hi[k][0] = h.x;
      hi[k][1] = h.y;
      if (a.qkv_bias) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          lo[k][e] += a.qkv_bias[col + i + e];
          hi[k][e] += a.qkv_bias[col + i + half + e];
        }
      }
#pragma unroll
      for (int e = 0; e < 2; ++e) sum_sq += lo[k][e] * lo[k][e] + hi[k][e] * hi[k][e];
    }
  }
  const bool is_q = head < a.Hq, is_k = !is_q && head < a.Hq + a.Hkv;
  const float* norm = is_q ? a.q_norm : (is_k ? a.k_norm : nullptr);
  const float inv = norm ? rsqrtf(WarpSum(sum_sq) / static_cast<float>(a.D) + a.eps) : 1.f;
  __nv_bfloat16* dst;
  if (is_q) {
    dst = q16 + static_cast<int64_t>(t) * qd + col;
  } else {
    const int32_t kind = is_k ? 0 : 1;
    const int32_t kv_head = is_k ? head - a.Hq : head - a.Hq - a.Hkv;
    const int32_t slot_global = a.slots[t];
    const int64_t block = slot_global / a.B, slot = slot_global % a.B;
    const int64_t block_elems = static_cast<int64_t>(a.L) * 2 * a.Hkv * a.B * a.D;
    dst = reinterpret_cast<__nv_bfloat16*>(a.kv_pool) + block * block_elems +
          ((static_cast<int64_t>(a.layer) * 2 + kind) * a.Hkv + kv_head) * a.B * a.D +
          slot * a.D;
  }
#pragma unroll
  for (int k = 0; k < kMaxPairs; ++k) {
    const int32_t i = 2 * (lane + 32 * k);
    if (i >= half) continue;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      if (norm) {
        lo[k][e] = lo[k][e] * inv * norm[i + e];
        hi[k][e] = hi[k][e] * inv * norm[i + half + e];
      }
      if (is_q || is_k) {
        const float c = a.cos_tab[static_cast<int64_t>(t) * half + i + e];
        const float s = a.sin_tab[static_cast<int64_t>(t) * half + i + e];
        const float rl = lo[k][e] * c - hi[k][e] * s, rh = hi[k][e] * c + lo[k][e] * s;
        lo[k][e] = rl;
        hi[k][e] = rh;
      }
    }
    *reinterpret_cast<__nv_bfloat162*>(dst + i) = __floats2bfloat162_rn(lo[k][0], lo[k][1]);
    *reinterpret_cast<__nv_bfloat162*>(dst + i + half) = __floats2bfloat162_rn(hi[k][0], hi[k][1]);
  }
}

// 8 outputs per thread from 16-byte gate and up vectors.
__global__ void SwiGluBf16Kernel(const __nv_bfloat16* gu, const float* bias, int32_t T, int32_t I,
                                 __nv_bfloat16* act) {
  const int32_t per_row = I / 8;
  const int64_t n = static_cast<int64_t>(T) * per_row;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = k / per_row;
    const int32_t i = static_cast<int32_t>(k % per_row) * 8;
    float g[8], u[8];
    LoadBf16x8(gu + t * 2 * I + i, g);
    LoadBf16x8(gu + t * 2 * I + I + i, u);
    uint4 out;
    __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&out);
#pragma unroll
    for (int j = 0; j < 8; j += 2) {
      float r[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float gv = g[j + e], uv = u[j + e];
        if (bias) {
          gv += bias[i + j + e];
          uv += bias[I + i + j + e];
        }
        r[e] = gv / (1.f + __expf(-gv)) * uv;
      }
      o[j / 2] = __floats2bfloat162_rn(r[0], r[1]);
    }
    *reinterpret_cast<uint4*>(act + t * I + i) = out;
  }
}

__global__ void SwiGluBf16ScalarKernel(const __nv_bfloat16* gu, const float* bias, int32_t T,
                                       int32_t I, __nv_bfloat16* act) {
  const int64_t n = static_cast<int64_t>(T) * I;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = k / I, i = k % I;
    float g = __bfloat162float(gu[t * 2 * I + i]), u = __bfloat162float(gu[t * 2 * I + I + i]);
    if (bias) {
      g += bias[i];
      u += bias[I + i];
    }
    act[k] = __float2bfloat16(g / (1.f + __expf(-g)) * u);
  }
}

int GridFor(int64_t n, int threads) {
  return static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65535));
}

}  // namespace

void SetChainedLaunches(bool enabled) { ChainedLaunchesEnabled() = enabled; }

cudaError_t LaunchEmbed(const int32_t* ids, const bf16_t* embed, int32_t T, int32_t H, float* x,
                        cudaStream_t stream) {
  EmbedKernel<<<T, 256, 0, stream>>>(ids, reinterpret_cast<const __nv_bfloat16*>(embed), H, x);
  return cudaGetLastError();
}

cudaError_t LaunchRopeTables(const int32_t* positions, const float* inv_freq, int32_t T,
                             int32_t half, float* cos_out, float* sin_out, cudaStream_t stream) {
  RopeTablesKernel<<<GridFor(int64_t{T} * half, 256), 256, 0, stream>>>(positions, inv_freq, T,
                                                                         half, cos_out, sin_out);
  return cudaGetLastError();
}

cudaError_t LaunchAddRmsNorm(float* x, const float* delta, const float* delta_bias,
                             const float* weight, const int32_t* gather, int32_t rows, int32_t H,
                             float eps, bf16_t* out, cudaStream_t stream) {
  auto* o = reinterpret_cast<__nv_bfloat16*>(out);
  const unsigned blocks = static_cast<unsigned>((rows + kNormRowsPerBlock - 1) / kNormRowsPerBlock);
  if (H % 128 == 0 && H <= 128 * 8) {
    AddRmsNormWarpKernel<8><<<blocks, kNormRowsPerBlock * 32, 0, stream>>>(
        x, delta, delta_bias, weight, gather, rows, H, eps, o);
  } else if (H % 128 == 0 && H <= 128 * 16) {
    AddRmsNormWarpKernel<16><<<blocks, kNormRowsPerBlock * 32, 0, stream>>>(
        x, delta, delta_bias, weight, gather, rows, H, eps, o);
  } else {
    AddRmsNormKernel<<<rows, kNormThreads, 0, stream>>>(x, delta, delta_bias, weight, gather, H,
                                                        eps, o);
  }
  return cudaGetLastError();
}

cudaError_t LaunchQkvPrologue(const QkvPrologueArgs& a, cudaStream_t stream) {
  const int per_head = std::max(32, (a.D / 2 + 31) / 32 * 32);
  const int heads = a.Hq + 2 * a.Hkv;
  return LaunchChained(QkvPrologueKernel,
                       dim3(a.T, (heads + kPrologueHeads - 1) / kPrologueHeads),
                       dim3(per_head * kPrologueHeads), 0, stream, a, per_head);
}

cudaError_t LaunchQkvPrologueBf16(const QkvPrologueArgs& a, const bf16_t* qkv16, bf16_t* q16,
                                  cudaStream_t stream) {
  if (a.D % 4 != 0 || a.D > 256) return cudaErrorInvalidValue;
  const int64_t warps = static_cast<int64_t>(a.T) * (a.Hq + 2 * a.Hkv);
  QkvPrologueBf16Kernel<<<static_cast<unsigned>((warps + kPrologueWarps - 1) / kPrologueWarps),
                          kPrologueWarps * 32, 0, stream>>>(
      a, reinterpret_cast<const __nv_bfloat16*>(qkv16), reinterpret_cast<__nv_bfloat16*>(q16));
  return cudaGetLastError();
}

cudaError_t LaunchSwiGluBf16(const bf16_t* gu, const float* bias, int32_t T, int32_t I,
                             bf16_t* act, cudaStream_t stream) {
  const auto* g = reinterpret_cast<const __nv_bfloat16*>(gu);
  auto* o = reinterpret_cast<__nv_bfloat16*>(act);
  if (I % 8 == 0) {
    SwiGluBf16Kernel<<<GridFor(int64_t{T} * I / 8, 256), 256, 0, stream>>>(g, bias, T, I, o);
  } else {
    SwiGluBf16ScalarKernel<<<GridFor(int64_t{T} * I, 256), 256, 0, stream>>>(g, bias, T, I, o);
  }
  return cudaGetLastError();
}

cudaError_t LaunchSwiGlu(const float* gu, const float* bias, int32_t T, int32_t I, bf16_t* act,
                         cudaStream_t stream) {
  SwiGluKernel<<<GridFor(int64_t{T} * I, 256), 256, 0, stream>>>(
      gu, bias, T, I, reinterpret_cast<__nv_bfloat16*>(act));
  return cudaGetLastError();
}

}  // namespace crescent::model::cuda
