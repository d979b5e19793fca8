// Small device helpers shared by the CUDA kernels: warp/block reductions
// and 16-byte bf16 vector loads.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <utility>

#include <algorithm>
#include <cstdint>

namespace crescent::model::cuda {

// Programmatic dependent launch (Hopper): a kernel launched with
// LaunchChained may start while the previous kernel in the stream is still
// running; it must call WaitForPriorGrid() before touching anything that
// kernel writes (everything before the wait may read only weights and the
// batch metadata uploaded before the forward pass). AllowNextGrid() lets
// the next chained kernel start its own prologue (weight prefetch) early.
__device__ __forceinline__ void WaitForPriorGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void AllowNextGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// Off while profiling (StageProfile): events between overlapping kernels
// would charge one kernel's time to its neighbour.
inline bool& ChainedLaunchesEnabled() {
  static bool enabled = true;
  return enabled;
}

// Launches `kernel` with programmatic stream serialisation (see above).
template <typename... KernelArgs, typename... Args>
cudaError_t LaunchChained(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                          cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attribute;
  config.numAttrs = ChainedLaunchesEnabled() ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

// Prefetches [p, p + bytes) into L2, one 128-byte line per lane step.
__device__ __forceinline__ void PrefetchL2(const void* p, int64_t bytes, int lane, int lanes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = int64_t{lane} * 128; off < bytes; off += int64_t{lanes} * 128) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(c + off));
  }
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, <= 1024); every
// thread gets the result. `scratch` holds 32 floats of shared memory.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.f;
  return WarpSum(v);
}

// 8 bf16 (16 bytes, aligned) widened to float.
__device__ __forceinline__ void LoadBf16x8(const __nv_bfloat16* p, float* out) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __bfloat1622float2(h[j]);
    out[2 * j] = f.x;
    out[2 * j + 1] = f.y;
  }
}

}  // namespace crescent::model::cuda
