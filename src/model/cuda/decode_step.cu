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
#include <cstdlib>

#include "model/cuda/decode_step.h"
#include "model/cuda/decode_step_attention.cuh"
#include "model/cuda/decode_step_device.cuh"
#include "model/cuda/device_helpers.cuh"

namespace crescent::model::cuda {
namespace {

using namespace step;  // NOLINT: this file's own building blocks

// ---- the weight stream ----

struct Ring {
  char* base;
  uint64_t* full;
  uint64_t* empty;
  uint32_t slots;
  uint32_t seq;  // tiles taken so far
  uint64_t wait_ns[8];  // tracing: time spent waiting on slots, per matrix kind
  uint32_t ablate;      // DecodeStepArgs::ablate
};

// Waits on a slot barrier, adding the time to *ns when tracing.
__device__ __forceinline__ void TimedWait(uint64_t* bar, uint32_t parity, uint64_t* ns) {
  if (!ns) return MbarWait(bar, parity);
  const uint64_t t0 = GlobalTimer();
  MbarWait(bar, parity);
  *ns += GlobalTimer() - t0;
}

// Streams the block's tiles of w [N][K] into the ring: row groups
// g = blockIdx.x, + gridDim.x, ..., each group's column chunks in order.
__device__ void ProduceMatrix(const bf16_t* w, int32_t N, int32_t K, Ring& r, uint64_t* ns) {
  const int32_t chunk = min(K, kMaxChunk), chunks = K / chunk;
  const int32_t groups = (N + kTileRows - 1) / kTileRows;
  const uint32_t row_bytes = static_cast<uint32_t>(chunk) * 2;
  for (int32_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int32_t rows = min(kTileRows, N - g * kTileRows);
    const bf16_t* src = w + int64_t{g} * kTileRows * K;
    for (int32_t c = 0; c < chunks; ++c, ++r.seq) {
      const uint32_t slot = r.seq % r.slots, round = r.seq / r.slots;
      if (round > 0) TimedWait(&r.empty[slot], (round - 1) & 1, ns);
      char* dst = r.base + size_t{slot} * kSlotBytes;
      if (r.ablate & 32) {
        MbarArrive(&r.full[slot]);
        continue;
      }
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

// One lane's share of a tile row . act: kIters x 8 columns, all loads
// issued before the arithmetic, one accumulator per 8 columns.
template <int kIters>
__device__ __forceinline__ float TileDot(const __nv_bfloat16* wr, const float* xr, int lane) {
  uint4 raw[kIters];
  float4 x0[kIters], x1[kIters];
#pragma unroll
  for (int j = 0; j < kIters; ++j) {
    const int k = lane * 8 + j * 256;
    raw[j] = *reinterpret_cast<const uint4*>(wr + k);
    x0[j] = *reinterpret_cast<const float4*>(xr + k);
    x1[j] = *reinterpret_cast<const float4*>(xr + k + 4);
  }
  float total = 0.f;
#pragma unroll
  for (int j = 0; j < kIters; ++j) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw[j]);
    const float2 w0 = __bfloat1622float2(h[0]), w1 = __bfloat1622float2(h[1]);
    const float2 w2 = __bfloat1622float2(h[2]), w3 = __bfloat1622float2(h[3]);
    float a = w0.x * x0[j].x;
    float b = w0.y * x0[j].y;
    a = fmaf(w1.x, x0[j].z, a);
    b = fmaf(w1.y, x0[j].w, b);
    a = fmaf(w2.x, x1[j].x, a);
    b = fmaf(w2.y, x1[j].y, b);
    a = fmaf(w3.x, x1[j].z, a);
    b = fmaf(w3.y, x1[j].w, b);
    total += a + b;
  }
  return total;
}

// y[n] = scale * (w[n] . act) + bias[n] for the block's rows n; with
// `resid` (the block's own rows of the residual stream, in shared memory,
// kTileRows per row group in schedule order) y[n] = resid += that.
template <int kChunk>
__device__ void ConsumeMatrixT(int32_t N, int32_t K, const float* act, float scale,
                               const float* bias, float* y, float* resid, Ring& r, int warp,
                               int lane, uint64_t* ns) {
  const int32_t chunks = K / kChunk;
  const int32_t groups = (N + kTileRows - 1) / kTileRows;
  for (int32_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int32_t row = g * kTileRows + warp;
    float acc = 0.f;
    for (int32_t c = 0; c < chunks; ++c, ++r.seq) {
      const uint32_t slot = r.seq % r.slots;
      TimedWait(&r.full[slot], (r.seq / r.slots) & 1, warp == 0 && lane == 0 ? ns : nullptr);
      if (row < N && !(r.ablate & 1)) {
        const __nv_bfloat16* wr =
            reinterpret_cast<const __nv_bfloat16*>(r.base + size_t{slot} * kSlotBytes) +
            warp * kChunk;
        acc += TileDot<kChunk / 256>(wr, act + c * kChunk, lane);
      }
      __syncwarp();
      if (lane == 0) MbarArriveRelaxed(&r.empty[slot]);
    }
    acc = WarpSum(acc);
    if (lane == 0 && row < N) {
      float v = acc * scale;
      if (bias) v += bias[row];
      if (resid) {
        float* own = resid + (g - blockIdx.x) / gridDim.x * kTileRows + warp;
        v += *own;
        *own = v;
      }
      y[row] = v;
    }
  }
}

__device__ __forceinline__ void ConsumeMatrix(int32_t N, int32_t K, const float* act, float scale,
                                              const float* bias, float* y, float* resid,
                                              Ring& r, int warp, int lane, uint64_t* ns) {
  switch (min(K, kMaxChunk)) {
    case 256:
      return ConsumeMatrixT<256>(N, K, act, scale, bias, y, resid, r, warp, lane, ns);
    case 512:
      return ConsumeMatrixT<512>(N, K, act, scale, bias, y, resid, r, warp, lane, ns);
    case 768:
      return ConsumeMatrixT<768>(N, K, act, scale, bias, y, resid, r, warp, lane, ns);
    default:
      return ConsumeMatrixT<1024>(N, K, act, scale, bias, y, resid, r, warp, lane, ns);
  }
}

// ---- stage inputs into shared memory (all consumer threads) ----

// act = x * g (x float32 from global, or a bf16 embedding row when
// `embed` is set: then block 0 also writes it to x as the residual stream);
// returns 1 / rms(x). Ends with a consumer barrier.
__device__ float LoadNormed(float* x, const __nv_bfloat16* embed, const float* g, int32_t K,
                            float eps, float* act, float* red, int tid, int warp, int lane,
                            uint32_t ablate) {
  if (ablate & 8) {
    ConsumerSync();
    return 1.f;
  }
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

// ---- the step ----

template <int D, int kG>
__global__ void __launch_bounds__(kThreads, 1)
    DecodeStepKernel(DecodeStepArgs a, uint32_t slots, int32_t region_floats) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ float red[kConsumerWarps];
  __shared__ float resid[kMaxResidRows];
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
  Ring ring{reinterpret_cast<char*>(smem), full, empty, slots, 0, {}, a.ablate};
  uint64_t* trace_ns = a.trace ? ring.wait_ns : nullptr;
  // Tracing: [stages * (2 grid + 1) + 2 + b * 8 + k] block b's time waiting
  // for tiles of matrix kind k (0 q/k/v, 2 o, 3 gate/up, 4 down, 5 lm_head),
  // [.. + 6] its producer's time waiting for free slots.
  const int64_t wait_at = int64_t{kStagesPerLayer} * a.L * (2 * gridDim.x + 1) + 2 +
                          int64_t{blockIdx.x} * 8;
  const int32_t H = a.H, I = a.I, QD = a.Hq * D, NQKV = QD + 2 * a.Hkv * D;

  if (a.ablate & 64) return;
  if (warp == kConsumerWarps) {  // the producer: weights only, never waits on activations
    if (lane != 0) return;
    for (int32_t l = 0; l < a.L; ++l) {
      const StepLayer& w = a.layers[l];
      ProduceMatrix(w.qkv, NQKV, H, ring, trace_ns);
      ProduceMatrix(w.o, H, QD, ring, trace_ns);
      ProduceMatrix(w.gate_up, 2 * I, H, ring, trace_ns);
      ProduceMatrix(w.down, H, I, ring, trace_ns);
    }
    if (a.want_logits) ProduceMatrix(a.lm_head, a.V, H, ring, trace_ns);
    if (a.trace) a.trace[wait_at + 6] = ring.wait_ns[0];
    return;
  }

  const int32_t token = *a.token, pos = *a.position;
  uint32_t* stage_counters = a.sync;
  const uint32_t target = a.epoch * gridDim.x;
  int stage = 0;
  const int stages = kStagesPerLayer * a.L;
  if (a.trace && blockIdx.x == 0 && tid == 0) {
    a.trace[int64_t{stages} * gridDim.x + stages] = GlobalTimer();
  }
  const __nv_bfloat16* embed_row =
      reinterpret_cast<const __nv_bfloat16*>(a.embed) + int64_t{token} * H;
  // The block's own rows of the residual stream (those its o_proj and down
  // tiles produce) start as the embedding.
  for (int32_t i = tid; i < kMaxResidRows; i += kConsumers) {
    const int32_t row = (blockIdx.x + i / kTileRows * gridDim.x) * kTileRows + i % kTileRows;
    if (row < H) resid[i] = __bfloat162float(embed_row[row]);
  }
  for (int32_t l = 0; l < a.L; ++l) {
    const StepLayer& w = a.layers[l];
    float inv = LoadNormed(a.x, l == 0 ? embed_row : nullptr, w.input_norm, H, a.eps, region, red,
                           tid, warp, lane, a.ablate);
    TraceMid(a.trace, stage, stages, tid);
    ConsumeMatrix(NQKV, H, region, inv, nullptr, a.qkv, nullptr, ring, warp, lane, trace_ns ? trace_ns + 0 : nullptr);
    KvRegs<D> kv;
    GridSync(stage_counters + stage, target, tid, a.trace, stage, stages,
             [&] { AttentionPrefetch<D>(a, l, pos, kv, tid); }, a.ablate);
    ++stage;
    if (!(a.ablate & 2)) AttentionStage<D, kG>(a, w, l, pos, region, kv, tid, stage, stages);
    GridSync(stage_counters + stage, target, tid, a.trace, stage, stages, a.ablate), ++stage;
    if (!(a.ablate & 4)) MergeAttention<D>(a, pos, region, warp, lane);
    TraceMid(a.trace, stage, stages, tid);
    ConsumeMatrix(H, QD, region, 1.f, w.o_bias, a.x, resid, ring, warp, lane, trace_ns ? trace_ns + 2 : nullptr);
    GridSync(stage_counters + stage, target, tid, a.trace, stage, stages, a.ablate), ++stage;
    inv = LoadNormed(a.x, nullptr, w.post_norm, H, a.eps, region, red, tid, warp, lane, a.ablate);
    TraceMid(a.trace, stage, stages, tid);
    ConsumeMatrix(2 * I, H, region, inv, nullptr, a.gu, nullptr, ring, warp, lane, trace_ns ? trace_ns + 3 : nullptr);
    GridSync(stage_counters + stage, target, tid, a.trace, stage, stages, a.ablate), ++stage;
    if (!(a.ablate & 8)) LoadSwiGlu(a.gu, I, region, tid);
    TraceMid(a.trace, stage, stages, tid);
    ConsumeMatrix(H, I, region, 1.f, w.down_bias, a.x, resid, ring, warp, lane, trace_ns ? trace_ns + 4 : nullptr);
    GridSync(stage_counters + stage, target, tid, a.trace, stage, stages, a.ablate), ++stage;
  }
  if (a.want_logits) {
    const float inv =
        LoadNormed(a.x, nullptr, a.final_norm, H, a.eps, region, red, tid, warp, lane, a.ablate);
    ConsumeMatrix(a.V, H, region, inv, nullptr, a.logits, nullptr, ring, warp, lane, trace_ns ? trace_ns + 5 : nullptr);
  }
  if (a.trace) {
    if (tid == 0) {
      for (int k = 0; k < 6; ++k) a.trace[wait_at + k] = ring.wait_ns[k];
    }
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
                                 optin - kStaticSmemBound);
    }
    if (err != cudaSuccess) return err;
    max_smem = optin - kStaticSmemBound;
  }
  if (a.H > int64_t{kMaxResidRows} * blocks) return cudaErrorInvalidValue;
  int32_t region = RegionFloats(a);
  const int64_t fixed = int64_t{region} * 4;
  const int64_t slots = (max_smem - fixed) / (kSlotBytes + 16);
  if (slots < 2) return cudaErrorInvalidConfiguration;
  uint32_t slot_count = static_cast<uint32_t>(slots);
  if (const char* env = std::getenv("CRESCENT_STEP_SLOTS")) {  // experiments: a smaller ring
    slot_count = std::clamp<uint32_t>(static_cast<uint32_t>(std::atoi(env)), 2, slot_count);
  }
  const size_t smem = size_t{slot_count} * kSlotBytes + fixed + size_t{slot_count} * 16;
  DecodeStepArgs args = a;
  if (const char* env = std::getenv("CRESCENT_STEP_ABLATE")) {  // experiments only
    args.ablate = static_cast<uint32_t>(std::atoi(env));
  }
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

int64_t DecodeStepSyncWords(int32_t L) { return int64_t{kStagesPerLayer} * L; }

int64_t DecodeStepTraceWords(int32_t L, int32_t blocks) {
  return int64_t{kStagesPerLayer} * L * (2 * blocks + 1) + 2 + int64_t{blocks} * 8;
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
