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
  AddRmsNormKernel<<<rows, kNormThreads, 0, stream>>>(x, delta, delta_bias, weight, gather, H, eps,
                                                      reinterpret_cast<__nv_bfloat16*>(out));
  return cudaGetLastError();
}

cudaError_t LaunchQkvPrologue(const QkvPrologueArgs& a, cudaStream_t stream) {
  const int per_head = std::max(32, (a.D / 2 + 31) / 32 * 32);
  const int heads = a.Hq + 2 * a.Hkv;
  return LaunchChained(QkvPrologueKernel,
                       dim3(a.T, (heads + kPrologueHeads - 1) / kPrologueHeads),
                       dim3(per_head * kPrologueHeads), 0, stream, a, per_head);
}

cudaError_t LaunchSwiGlu(const float* gu, const float* bias, int32_t T, int32_t I, bf16_t* act,
                         cudaStream_t stream) {
  SwiGluKernel<<<GridFor(int64_t{T} * I, 256), 256, 0, stream>>>(
      gu, bias, T, I, reinterpret_cast<__nv_bfloat16*>(act));
  return cudaGetLastError();
}

}  // namespace crescent::model::cuda
