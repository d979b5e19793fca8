// Decode-size projections (T <= 8 activation rows): bandwidth-bound
// weight streaming with the neighbouring element-wise work fused in
// (RMSNorm of the input, SwiGLU of the input, residual add of the output),
// so that a decode layer runs without separate norm and SwiGLU kernels.
#include <cuda_bf16.h>

#include "model/cuda/device_helpers.cuh"
#include "model/cuda/kernels.h"

namespace crescent::model::cuda {
namespace {

constexpr int kWarps = 8;       // per block
constexpr int kRowsPerWarp = 4;  // weight rows sharing each input load
// Aim for this many warps on the device: enough 16-byte loads in flight to
// cover HBM latency (Little's law: ~3 TB/s x ~1 us).
constexpr int kTargetWarps = 8192;

__device__ __forceinline__ void LoadF32x8(const float* p, float* out) {
  const float4 a = *reinterpret_cast<const float4*>(p);
  const float4 b = *reinterpret_cast<const float4*>(p + 4);
  out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
  out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
}

// Block: kWarps warps = kWarps / S row groups of kRowsPerWarp rows, each
// split into S slices of K (one warp each).
template <GemvInput M, int TR>
__global__ void __launch_bounds__(kWarps * 32) GemvKernel(GemvArgs a, int32_t S) {
  __shared__ float red[kWarps][kRowsPerWarp * TR + TR];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int group = warp / S, part = warp % S;
  const int64_t n0 = (int64_t{blockIdx.x} * (kWarps / S) + group) * kRowsPerWarp;
  const int32_t K = a.K, slice = K / S, kb = part * slice, ke = kb + slice;
  auto load_weights = [&](int32_t k, uint4* wv) {
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      wv[r] = n0 + r < a.N && k < ke
                  ? __ldg(reinterpret_cast<const uint4*>(a.w + (n0 + r) * K + k))
                  : make_uint4(0, 0, 0, 0);
    }
  };
  // Before the previous kernel is done (programmatic launch): the first
  // weight vectors into registers and the rest of the slice into L2, as
  // weights never depend on it; then wait for its outputs (our input).
  AllowNextGrid();
  int32_t k = kb + lane * 8;
  uint4 wv[kRowsPerWarp];
  load_weights(k, wv);
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    if (n0 + r < a.N && slice > 256) {
      PrefetchL2(a.w + (n0 + r) * K + kb + 256, int64_t{slice - 256} * 2, lane, 32);
    }
  }
  WaitForPriorGrid();
  float acc[kRowsPerWarp][TR] = {};
  float ss[TR] = {};
  for (; k < ke; k += 256) {
    uint4 next[kRowsPerWarp];
    load_weights(k + 256, next);  // in flight while this step computes
    float g[8];
    if constexpr (M == GemvInput::kNormF32) LoadF32x8(a.norm + k, g);
#pragma unroll
    for (int t = 0; t < TR; ++t) {
      if (t >= a.T) break;
      float xf[8];
      if constexpr (M == GemvInput::kBf16) {
        LoadBf16x8(reinterpret_cast<const __nv_bfloat16*>(a.x) + int64_t{t} * K + k, xf);
      } else if constexpr (M == GemvInput::kNormF32) {
        LoadF32x8(static_cast<const float*>(a.x) + int64_t{t} * K + k, xf);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          ss[t] += xf[j] * xf[j];
          xf[j] *= g[j];
        }
      } else {
        float up[8];
        const float* row = static_cast<const float*>(a.x) + int64_t{t} * 2 * K;
        LoadF32x8(row + k, xf);
        LoadF32x8(row + K + k, up);
#pragma unroll
        for (int j = 0; j < 8; ++j) xf[j] = xf[j] / (1.f + __expf(-xf[j])) * up[j];
      }
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const __nv_bfloat162* wh = reinterpret_cast<const __nv_bfloat162*>(&wv[r]);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float2 wf = __bfloat1622float2(wh[j]);
          acc[r][t] = fmaf(wf.x, xf[2 * j], fmaf(wf.y, xf[2 * j + 1], acc[r][t]));
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) wv[r] = next[r];
  }
#pragma unroll
  for (int t = 0; t < TR; ++t) {
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const float v = WarpSum(acc[r][t]);
      if (lane == 0) red[warp][r * TR + t] = v;
    }
    if constexpr (M == GemvInput::kNormF32) {
      const float v = WarpSum(ss[t]);
      if (lane == 0) red[warp][kRowsPerWarp * TR + t] = v;
    }
  }
  __syncthreads();
  if (part != 0 || lane >= kRowsPerWarp * TR) return;
  const int r = lane / TR, t = lane % TR;
  const int64_t n = n0 + r;
  if (t >= a.T || n >= a.N) return;
  float v = 0.f, sq = 0.f;
  for (int p = 0; p < S; ++p) {
    v += red[warp + p][r * TR + t];
    if constexpr (M == GemvInput::kNormF32) sq += red[warp + p][kRowsPerWarp * TR + t];
  }
  if constexpr (M == GemvInput::kNormF32) v *= rsqrtf(sq / static_cast<float>(K) + a.eps);
  if (a.bias) v += a.bias[n];
  float* y = a.y + int64_t{t} * a.N + n;
  *y = a.accumulate ? *y + v : v;
}

template <GemvInput M>
cudaError_t LaunchFor(const GemvArgs& a, int32_t S, int grid, cudaStream_t stream) {
  if (a.T <= 1) {
    return LaunchChained(GemvKernel<M, 1>, dim3(grid), dim3(kWarps * 32), 0, stream, a, S);
  } else if (a.T <= 2) {
    return LaunchChained(GemvKernel<M, 2>, dim3(grid), dim3(kWarps * 32), 0, stream, a, S);
  } else if (a.T <= 4) {
    return LaunchChained(GemvKernel<M, 4>, dim3(grid), dim3(kWarps * 32), 0, stream, a, S);
  } else if (a.T <= kGemvMaxRows) {
    return LaunchChained(GemvKernel<M, 8>, dim3(grid), dim3(kWarps * 32), 0, stream, a, S);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t LaunchGemv(const GemvArgs& a, cudaStream_t stream) {
  if (a.K % 8 != 0) return cudaErrorInvalidValue;
  const int64_t groups = (int64_t{a.N} + kRowsPerWarp - 1) / kRowsPerWarp;
  int32_t S = 1;
  // Slices of at least 256 elements keep all 32 lanes busy. (Targets of
  // 2k-16k warps measured alike on an H100: launch overhead dominates.)
  while (S < kWarps && groups * S < kTargetWarps && a.K % (8 * 2 * S) == 0 &&
         a.K / (2 * S) >= 256) {
    S *= 2;
  }
  const int grid = static_cast<int>((groups + kWarps / S - 1) / (kWarps / S));
  switch (a.input) {
    case GemvInput::kBf16: return LaunchFor<GemvInput::kBf16>(a, S, grid, stream);
    case GemvInput::kNormF32: return LaunchFor<GemvInput::kNormF32>(a, S, grid, stream);
    case GemvInput::kSwiGlu: return LaunchFor<GemvInput::kSwiGlu>(a, S, grid, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace crescent::model::cuda
