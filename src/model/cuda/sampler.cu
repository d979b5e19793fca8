// Sampling on the device (kernels.h, LaunchSample): one block per logits
// row, the engine's sampler semantics (src/engine/sampler.cc) without the
// penalties: greedy = the first index of the maximum; otherwise weights
// exp((l - max) / T) (the same float polynomial as the CPU), min_p, then
// top_k and top_p as thresholds on the weights found by bisection over the
// weight's float bits (a float >= 0 orders like its bits), then the
// caller's uniform draw walks the kept weights in token order.
//
// Every pass re-reads the row (L2-resident: 600 KB for a 150k vocabulary)
// rather than sorting it; greedy is one pass, top_k/top_p ~31 passes each.
#include <cuda_runtime.h>

#include <cfloat>
#include <climits>
#include <cstdint>

#include "model/cuda/device_helpers.cuh"
#include "model/cuda/kernels.h"

namespace crescent::model::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

// e^x for x <= 0: sampler.cc's ExpNonPositive, operation for operation.
__device__ __forceinline__ float ExpNonPositive(float x) {
  const float clamped = x < -87.0f ? -87.0f : x;
  const float t = __fmul_rn(clamped, 1.44269504088896341f);
  const float n = floorf(t);
  const float f = __fsub_rn(t, n);
  float p = 1.52527338e-5f;
  p = __fadd_rn(__fmul_rn(p, f), 1.54035304e-4f);
  p = __fadd_rn(__fmul_rn(p, f), 1.33335581e-3f);
  p = __fadd_rn(__fmul_rn(p, f), 9.61812911e-3f);
  p = __fadd_rn(__fmul_rn(p, f), 5.55041087e-2f);
  p = __fadd_rn(__fmul_rn(p, f), 2.40226507e-1f);
  p = __fadd_rn(__fmul_rn(p, f), 6.93147181e-1f);
  p = __fadd_rn(__fmul_rn(p, f), 1.0f);
  const float scale = __int_as_float((static_cast<int32_t>(n) + 127) << 23);
  return x < -87.0f ? 0.0f : __fmul_rn(p, scale);
}

template <typename T>
__device__ T BlockSumT(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();  // scratch may still be read by the previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = 0;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) total += scratch[w];
  return total;
}

struct Row {
  const float* l;
  int32_t V;
  float max, inv_t, min_w;
  __device__ float W(int32_t i) const {
    const float e = ExpNonPositive(__fmul_rn(__fsub_rn(l[i], max), inv_t));
    return e >= min_w ? e : 0.0f;
  }
};

// Count of weights >= t, and their mass.
__device__ int32_t CountAtLeast(const Row& r, float t, int32_t* iscratch) {
  int32_t c = 0;
#pragma unroll 8
  for (int32_t i = threadIdx.x; i < r.V; i += kThreads) c += r.W(i) >= t ? 1 : 0;
  return BlockSumT(c, iscratch);
}
__device__ double MassAtLeast(const Row& r, float t, double* dscratch) {
  double m = 0;
#pragma unroll 8
  for (int32_t i = threadIdx.x; i < r.V; i += kThreads) {
    const float w = r.W(i);
    m += w >= t ? w : 0.0f;
  }
  return BlockSumT(m, dscratch);
}

__global__ void __launch_bounds__(kThreads)
    SampleKernel(const float* logits, int64_t stride, const DeviceSampleParams* params, int32_t V,
                 DeviceSampleResult* out) {
  __shared__ double dscratch[kWarps];
  __shared__ int32_t iscratch[kWarps];
  __shared__ float fbest[kWarps];
  __shared__ int32_t ibest[kWarps];
  __shared__ int32_t picked;
  const DeviceSampleParams p = params[blockIdx.x];
  const float* l = logits + p.row * stride;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  // Maximum and its first index (NaNs never win). 16-byte loads, several in
  // flight per thread: one block streams the whole row (600 KB for 150k).
  float best = -INFINITY;
  int32_t bi = INT_MAX;
  const bool vec = V % 4 == 0 && (reinterpret_cast<uintptr_t>(l) & 15) == 0;
  const int32_t V4 = vec ? V / 4 : 0;
  const float4* l4 = reinterpret_cast<const float4*>(l);
#pragma unroll 4
  for (int32_t j = tid; j < V4; j += kThreads) {
    const float4 v = l4[j];
    if (v.x > best) best = v.x, bi = 4 * j;
    if (v.y > best) best = v.y, bi = 4 * j + 1;
    if (v.z > best) best = v.z, bi = 4 * j + 2;
    if (v.w > best) best = v.w, bi = 4 * j + 3;
  }
  for (int32_t i = 4 * V4 + tid; i < V; i += kThreads) {
    const float v = l[i];
    if (v > best) {
      best = v;
      bi = i;
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > best || (ov == best && oi < bi)) {
      best = ov;
      bi = oi;
    }
  }
  if (lane == 0) {
    fbest[warp] = best;
    ibest[warp] = bi;
  }
  __syncthreads();
  best = fbest[0];
  bi = ibest[0];
  for (int w = 1; w < kWarps; ++w) {
    if (fbest[w] > best || (fbest[w] == best && ibest[w] < bi)) {
      best = fbest[w];
      bi = ibest[w];
    }
  }
  if (bi == INT_MAX) bi = 0;  // only NaNs, as Argmax
  int32_t token = bi;

  if (!(p.temperature < 1e-5f)) {
    const Row r{l, V, best, 1.0f / p.temperature, p.min_p > 0.0f ? p.min_p : 0.0f};
    // Kept: weights >= thr (the smallest positive float: every w > 0).
    uint32_t thr_bits = 1;
    if (p.top_k > 0 && CountAtLeast(r, __uint_as_float(1), iscratch) > p.top_k) {
      // The k-th largest weight: the largest t with count(w >= t) >= k.
      uint32_t lo = 1, hi = 0x3f800001u;  // count(>= lo) >= k; count(>= hi) < k
      while (hi - lo > 1) {
        const uint32_t mid = lo + (hi - lo) / 2;
        if (CountAtLeast(r, __uint_as_float(mid), iscratch) >= p.top_k) {
          lo = mid;
        } else {
          hi = mid;
        }
      }
      thr_bits = lo;
    }
    double total = MassAtLeast(r, __uint_as_float(thr_bits), dscratch);
    if (p.top_p < 1.0f) {
      // The nucleus: the largest t with mass(w >= t) >= (top_p - 1e-6) of
      // the kept mass (sampler.cc's slack), i.e. the best-first prefix.
      const double target = (static_cast<double>(p.top_p) - 1e-6) * total;
      uint32_t lo = thr_bits, hi = 0x3f800001u;
      while (hi - lo > 1) {
        const uint32_t mid = lo + (hi - lo) / 2;
        if (MassAtLeast(r, __uint_as_float(mid), dscratch) >= target) {
          lo = mid;
        } else {
          hi = mid;
        }
      }
      thr_bits = lo;
      total = MassAtLeast(r, __uint_as_float(thr_bits), dscratch);
    }
    // Walk the kept weights in token order: thread t owns a contiguous
    // slice; an exclusive scan of the slices' masses finds the slice.
    const float thr = __uint_as_float(thr_bits);
    const double target = p.uniform * total;
    const int32_t per = (V + kThreads - 1) / kThreads;
    const int32_t begin = min(V, tid * per), end = min(V, begin + per);
    double mine = 0;
#pragma unroll 8
    for (int32_t i = begin; i < end; ++i) {
      const float w = r.W(i);
      mine += w >= thr ? w : 0.0f;
    }
    // Inclusive scan over warps, then over the warp totals.
    double incl = mine;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const double up = __shfl_up_sync(0xffffffffu, incl, o);
      if (lane >= o) incl += up;
    }
    __syncthreads();
    if (lane == 31) dscratch[warp] = incl;
    if (tid == 0) picked = -1;
    __syncthreads();
    double before = incl - mine;
    for (int w = 0; w < warp; ++w) before += dscratch[w];
    if (before <= target && target < before + mine) {
      double cum = before;
      for (int32_t i = begin; i < end; ++i) {
        const float w = r.W(i);
        if (w < thr) continue;
        cum += w;
        if (target < cum) {
          picked = i;
          break;
        }
      }
    }
    __syncthreads();
    if (picked >= 0) token = picked;  // else rounding put the target past the end: the best
  }

  DeviceSampleResult res{token, 0.0f, 0, 0};
  if (p.logprob) {
    // log_softmax of the raw row at the token, and its rank.
    const float lt = l[token];
    double sum = 0;
    int32_t above = 0;
#pragma unroll 4
    for (int32_t i = tid; i < V; i += kThreads) {
      sum += exp(static_cast<double>(l[i] - best));
      above += l[i] > lt ? 1 : 0;
    }
    sum = BlockSumT(sum, dscratch);
    above = BlockSumT(above, iscratch);
    const float lse = best + static_cast<float>(log(sum));
    res.logprob = lt - lse;
    res.rank = 1 + above;
  }
  if (tid == 0) out[blockIdx.x] = res;
}

}  // namespace

cudaError_t LaunchSample(const float* logits, int64_t row_stride, const DeviceSampleParams* params,
                         int32_t rows, int32_t V, DeviceSampleResult* out, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  SampleKernel<<<rows, kThreads, 0, stream>>>(logits, row_stride, params, V, out);
  return cudaGetLastError();
}

}  // namespace crescent::model::cuda
