// The persistent batch-1 decode step (decode_step.h says why and what).
//
// Block layout: warps 0-7 consume (compute every stage), warp 8's lane 0
// produces (bulk-copies weight tiles into the ring). A tile is 8 rows x up
// to 1024 columns of one matrix (16 KiB): consumer warp w owns row w of it.
// Both sides walk the same schedule: per layer the q/k/v, o, gate/up and
// down matrices, then lm_head; of each matrix the row groups g = blockIdx.x,
// blockIdx.x + gridDim.x, ..., of each group its column chunks in order.
// A gate/up group holds gate rows 4g..4g+3 and the matching up rows.
// The ring's slots are guarded by a "full" mbarrier (bulk copy landed) and
// an "empty" one (all 8 consumer warps are done with it).
//
// The exchange buffers (tagged words, decode_step_device.cuh), twice (by
// layer parity: a buffer is rewritten two layers later, when every block
// has read it, since every block produces some of each layer's q/k/v):
// x_in [H] (the layer's input residual), x_mid [H] (after attention),
// qkv [Hq*D + 2*Hkv*D], att [Hq*D] (attention output), act [I] (SwiGLU).
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

// Row of tile row `i` of row group g: 8g + i, or with `half` (the gate/up
// matrix [2 half][K]) gate row 4g + i for i < 4, else up row half + 4g + i - 4.
__device__ __forceinline__ int64_t TileRow(int32_t g, int32_t i, int32_t half) {
  if (half == 0) return int64_t{g} * kTileRows + i;
  constexpr int kHalfRows = kTileRows / 2;
  return int64_t{g} * kHalfRows + i % kHalfRows + (i < kHalfRows ? 0 : half);
}

// Streams the block's tiles of w [N][K] into the ring: row groups
// g = blockIdx.x, + gridDim.x, ..., each group's column chunks in order
// (rows as TileRow(g, i, half)).
__device__ void ProduceMatrix(const bf16_t* w, int32_t N, int32_t K, int32_t half, Ring& r,
                              uint64_t* ns) {
  const int32_t chunk = min(K, kMaxChunk), chunks = K / chunk;
  const int32_t groups = (N + kTileRows - 1) / kTileRows;
  const uint32_t row_bytes = static_cast<uint32_t>(chunk) * 2;
  for (int32_t g = blockIdx.x; g < groups; g += gridDim.x) {
    const int32_t rows = min(kTileRows, N - g * kTileRows);
    for (int32_t c = 0; c < chunks; ++c, ++r.seq) {
      const uint32_t slot = r.seq % r.slots, round = r.seq / r.slots;
      if (round > 0) TimedWait(&r.empty[slot], (round - 1) & 1, ns);
      char* dst = r.base + size_t{slot} * kSlotBytes;
      if (r.ablate & 32) {
        MbarArrive(&r.full[slot]);
        continue;
      }
      MbarExpectTx(&r.full[slot], rows * row_bytes);
      if (chunks == 1) {  // runs of consecutive rows: one copy each
        const int32_t run = half == 0 ? rows : kTileRows / 2;
        for (int32_t i = 0; i < rows; i += run) {
          BulkCopy(dst + i * row_bytes, w + TileRow(g, i, half) * K, run * row_bytes,
                   &r.full[slot]);
        }
      } else {
        for (int32_t i = 0; i < rows; ++i) {
          BulkCopy(dst + i * row_bytes, w + TileRow(g, i, half) * K + c * chunk, row_bytes,
                   &r.full[slot]);
        }
      }
    }
  }
}

// A stage's input `act` lives in shared memory permuted so that TileDot's
// loads are conflict-free: of each 256 columns, the float4 holding columns
// 8i..8i+3 is at slot i, the one holding 8i+4..8i+7 at slot 32 + i (lane i
// needs both; read in place, consecutive lanes would hit every bank twice).
__device__ __forceinline__ int32_t ActSlot(int32_t k) {  // k: a multiple of 4
  const int32_t w = k % 256;
  return k / 256 * 64 + (w % 8) / 4 * 32 + w / 8;
}

// One lane's share of a tile row . act: kIters x 8 columns, all loads
// issued before the arithmetic, one accumulator per 8 columns. `xr` is the
// permuted act (ActSlot) from the tile's first column on.
template <int kIters>
__device__ __forceinline__ float TileDot(const __nv_bfloat16* wr, const float* xr, int lane) {
  uint4 raw[kIters];
  float4 x0[kIters], x1[kIters];
  const float4* x4 = reinterpret_cast<const float4*>(xr);
#pragma unroll
  for (int j = 0; j < kIters; ++j) {
    raw[j] = *reinterpret_cast<const uint4*>(wr + lane * 8 + j * 256);
    x0[j] = x4[j * 64 + lane];
    x1[j] = x4[j * 64 + 32 + lane];
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

// v = scale * (w[row] . act) + bias[row] for the block's rows, handed to
// emit(g, k, warp, row, v) on lane 0 of the row's warp (group g is the
// block's k-th; row as TileRow(g, warp, 0)).
template <int kChunk, typename Emit>
__device__ void ConsumeMatrixT(int32_t N, int32_t K, const float* act, float scale,
                               const float* bias, Ring& r, int warp, int lane, uint64_t* ns,
                               Emit&& emit) {
  const int32_t chunks = K / kChunk;
  const int32_t groups = (N + kTileRows - 1) / kTileRows;
  for (int32_t g = blockIdx.x, k = 0; g < groups; g += gridDim.x, ++k) {
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
      emit(g, k, warp, row, v);
    }
  }
}

template <typename Emit>
__device__ __forceinline__ void ConsumeMatrix(int32_t N, int32_t K, const float* act, float scale,
                                              const float* bias, Ring& r, int warp, int lane,
                                              uint64_t* ns, Emit&& emit) {
  switch (min(K, kMaxChunk)) {
    case 256: return ConsumeMatrixT<256>(N, K, act, scale, bias, r, warp, lane, ns, emit);
    case 512: return ConsumeMatrixT<512>(N, K, act, scale, bias, r, warp, lane, ns, emit);
    case 768: return ConsumeMatrixT<768>(N, K, act, scale, bias, r, warp, lane, ns, emit);
    default: return ConsumeMatrixT<1024>(N, K, act, scale, bias, r, warp, lane, ns, emit);
  }
}

// ---- stage inputs into shared memory (all consumer threads) ----

// Loads of kLoadBatch x 4 tagged words per thread are in flight together.
constexpr int kLoadBatch = 2;

// act[k] (permuted: ActSlot) = scale(k, value of word k) for the K tagged words `in`, or the
// bf16 row `embed` when set; returns the sum of squares of the values over
// the thread's words. Every word is loaded once; while some of a warp's
// words lack the tag, one lane polls one of them (a whole block polling
// kilobytes would flood L2 and slow the weight stream), then the warp
// reloads what is missing.
template <typename Scale>
__device__ __forceinline__ float LoadInput(const uint64_t* in, uint32_t tag,
                                           const __nv_bfloat16* embed, int32_t K, float* act,
                                           int tid, uint32_t sleep_ns, Scale&& scale) {
  constexpr int32_t kStep = kConsumers * 4;
  const int lane = tid % 32;
  float ss = 0.f;
  for (int32_t base = 0; base < K; base += kStep * kLoadBatch) {  // uniform over the block
    uint64_t w[kLoadBatch][4];
    bool ready[kLoadBatch];
    if (!embed) {
#pragma unroll
      for (int b = 0; b < kLoadBatch; ++b) {
        const int32_t k = base + b * kStep + tid * 4;
        ready[b] = k >= K;
        if (!ready[b]) LoadWords<4>(in + k, w[b]);
      }
      long long polls = 0;
      while (true) {
        bool mine = true;
#pragma unroll
        for (int b = 0; b < kLoadBatch; ++b) {
          ready[b] = ready[b] || AllTagged<4>(w[b], tag);
          mine = mine && ready[b];
        }
        const unsigned pending = __ballot_sync(0xffffffffu, !mine);
        if (pending == 0) break;
        if (lane == __ffs(pending) - 1) {  // the leader waits for one missing word
          const uint64_t* word = nullptr;
#pragma unroll
          for (int b = kLoadBatch - 1; b >= 0; --b) {
            if (!ready[b]) word = in + base + b * kStep + tid * 4 + 3;
          }
          WaitForTag(word, tag, polls, sleep_ns);
        }
        __syncwarp();
#pragma unroll
        for (int b = 0; b < kLoadBatch; ++b) {
          if (!ready[b]) LoadWords<4>(in + base + b * kStep + tid * 4, w[b]);
        }
      }
    }
#pragma unroll
    for (int b = 0; b < kLoadBatch; ++b) {
      const int32_t k = base + b * kStep + tid * 4;
      if (k >= K) break;
      float v[4];
      if (embed) {
        const __nv_bfloat162* e = reinterpret_cast<const __nv_bfloat162*>(embed + k);
        const float2 lo = __bfloat1622float2(e[0]), hi = __bfloat1622float2(e[1]);
        v[0] = lo.x, v[1] = lo.y, v[2] = hi.x, v[3] = hi.y;
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) v[i] = __uint_as_float(static_cast<uint32_t>(w[b][i]));
      }
      ss += v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + v[3] * v[3];
      float4 out;
      out.x = scale(k, v[0]);
      out.y = scale(k + 1, v[1]);
      out.z = scale(k + 2, v[2]);
      out.w = scale(k + 3, v[3]);
      reinterpret_cast<float4*>(act)[ActSlot(k)] = out;
    }
  }
  return ss;
}

// act = x * g, x the tagged words `in` (or a bf16 embedding row when
// `embed` is set); returns 1 / rms(x). Starts and ends with a consumer
// barrier.
__device__ float LoadNormed(const uint64_t* in, uint32_t tag, const __nv_bfloat16* embed,
                            const float* g, int32_t K, float eps, float* act, float* red, int tid,
                            int warp, int lane, uint32_t sleep_ns) {
  ConsumerSync();  // the previous stage's reads of act are done
  float ss =
      LoadInput(in, tag, embed, K, act, tid, sleep_ns, [g](int32_t k, float v) {
        return v * g[k];
      });
  ss = WarpSum(ss);
  if (lane == 0) red[warp] = ss;
  ConsumerSync();
  float total = 0.f;
#pragma unroll
  for (int i = 0; i < kConsumerWarps; ++i) total += red[i];
  return rsqrtf(total / static_cast<float>(K) + eps);
}

// act = the K tagged words `in`. Starts and ends with a consumer barrier.
__device__ void LoadExchanged(const uint64_t* in, uint32_t tag, int32_t K, float* act, int tid,
                              uint32_t sleep_ns) {
  ConsumerSync();  // the previous stage's reads of act are done
  LoadInput(in, tag, nullptr, K, act, tid, sleep_ns, [](int32_t, float v) { return v; });
  ConsumerSync();
}

// ---- the step ----

// Floats of the region that holds a stage's input (act, or the attention
// stage's scratch).
__host__ __device__ inline int32_t StageInputFloats(int32_t H, int32_t QD, int32_t I, int32_t D,
                                                    int32_t G) {
  const int32_t act = H > QD ? (H > I ? H : I) : (QD > I ? QD : I);
  const int32_t attention = AttentionFloats(D, G);
  return ((act > attention ? act : attention) + 3) / 4 * 4;
}

// The exchange buffers of one layer parity (see the top of this file).
enum Buffer { kXIn, kXMid, kQkv, kAtt, kAct };

__host__ __device__ inline int64_t ExchangeParityWords(int32_t H, int32_t QD, int32_t NQKV,
                                                       int32_t I) {
  return 2 * int64_t{H} + NQKV + QD + I;
}

// Buffer `b` of layer `layer` (recomputed where used: fewer live registers).
__device__ __forceinline__ uint64_t* ExchangeOf(const DecodeStepArgs& a, int32_t layer, Buffer b,
                                                int32_t QD, int32_t NQKV) {
  uint64_t* p = a.exchange + (layer & 1) * ExchangeParityWords(a.H, QD, NQKV, a.I);
  switch (b) {
    case kXIn: return p;
    case kXMid: return p + a.H;
    case kQkv: return p + 2 * a.H;
    case kAtt: return p + 2 * a.H + NQKV;
    default: return p + 2 * a.H + NQKV + QD;
  }
}

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
  const int stages = kStagesPerLayer * a.L;
  const int64_t trace_end = int64_t{stages} * gridDim.x * 2;  // start, end, then waits
  const int64_t wait_at = trace_end + 2 + int64_t{blockIdx.x} * 8;
  const int32_t H = a.H, I = a.I, QD = a.Hq * D, NQKV = QD + 2 * a.Hkv * D;

  if (a.ablate & 64) return;
  if (warp == kConsumerWarps) {  // the producer: weights only, never waits on activations
    if (lane != 0) return;
    for (int32_t l = 0; l < a.L; ++l) {
      const StepLayer& w = a.layers[l];
      ProduceMatrix(w.qkv, NQKV, H, 0, ring, trace_ns);
      ProduceMatrix(w.o, H, QD, 0, ring, trace_ns);
      ProduceMatrix(w.gate_up, 2 * I, H, I, ring, trace_ns);
      ProduceMatrix(w.down, H, I, 0, ring, trace_ns);
    }
    if (a.want_logits) ProduceMatrix(a.lm_head, a.V, H, 0, ring, trace_ns);
    if (a.trace) a.trace[wait_at + 6] = ring.wait_ns[0];
    return;
  }

  const int32_t token = *a.token, pos = *a.position;
  if (a.trace && blockIdx.x == 0 && tid == 0) a.trace[trace_end] = GlobalTimer();
  const __nv_bfloat16* embed_row =
      reinterpret_cast<const __nv_bfloat16*>(a.embed) + int64_t{token} * H;
  // The block's own rows of the residual stream (those its o_proj and down
  // tiles produce) start as the embedding.
  for (int32_t i = tid; i < kMaxResidRows; i += kConsumers) {
    const int32_t row = (blockIdx.x + i / kTileRows * gridDim.x) * kTileRows + i % kTileRows;
    if (row < H) resid[i] = __bfloat162float(embed_row[row]);
  }
  // Residual stages: resid += v, then published.
  float* own_rows = resid;
  auto residual_to = [own_rows](uint64_t* out, uint32_t tag) {
    return [own_rows, out, tag](int32_t, int32_t k, int warp_, int32_t row, float v) {
      float* own = own_rows + k * kTileRows + warp_;
      v += *own;
      *own = v;
      StoreTagged(out + row, v, tag);
    };
  };
  // The block's gate/up results, [group k][8], beside every stage's input.
  float* gu_out = region + StageInputFloats(H, QD, I, D, a.Hq / a.Hkv);
  int stage = 0;
  for (int32_t l = 0; l < a.L; ++l, stage += kStagesPerLayer) {
    const StepLayer& w = a.layers[l];
    auto ex = [&](Buffer b) { return ExchangeOf(a, l, b, QD, NQKV); };
    const uint32_t tag = a.epoch * static_cast<uint32_t>(a.L + 1) + l;
    // q/k/v
    float inv = LoadNormed(ex(kXIn), tag, l == 0 ? embed_row : nullptr, w.input_norm, H, a.eps,
                           region, red, tid, warp, lane, a.poll_sleep_ns);
    TraceStage(a.trace, stage, false, tid);
    ConsumeMatrix(NQKV, H, region, inv, nullptr, ring, warp, lane, trace_ns,
                  [&](int32_t, int32_t, int, int32_t row, float v) {
                    StoreTagged(ex(kQkv) + row, v, tag);
                  });
    TraceStage(a.trace, stage, true, tid);
    // attention: the first K/V rows in flight while q/k/v arrive
    KvRegs<D> kv;
    AttentionPrefetch<D>(a, l, pos, kv, tid);
    ConsumerSync();  // the q/k/v stage's reads of act are done
    AttentionStage<D, kG>(a, w, l, pos, ex(kQkv), ex(kAtt), tag, region, kv, tid, stage + 1);
    TraceStage(a.trace, stage + 1, true, tid);
    // o_proj
    LoadExchanged(ex(kAtt), tag, QD, region, tid, a.poll_sleep_ns);
    TraceStage(a.trace, stage + 2, false, tid);
    ConsumeMatrix(H, QD, region, 1.f, w.o_bias, ring, warp, lane,
                  trace_ns ? trace_ns + 2 : nullptr, residual_to(ex(kXMid), tag));
    TraceStage(a.trace, stage + 2, true, tid);
    // gate/up, SwiGLU
    inv = LoadNormed(ex(kXMid), tag, nullptr, w.post_norm, H, a.eps, region, red, tid, warp, lane,
                     a.poll_sleep_ns);
    TraceStage(a.trace, stage + 3, false, tid);
    ConsumeMatrix(2 * I, H, region, inv, nullptr, ring, warp, lane,
                  trace_ns ? trace_ns + 3 : nullptr,
                  [&](int32_t, int32_t k, int warp_, int32_t, float v) {
                    gu_out[k * kTileRows + warp_] = v;
                  });
    ConsumerSync();
    constexpr int kHalfRows = kTileRows / 2;
    const int32_t my_groups = (I / kHalfRows - static_cast<int32_t>(blockIdx.x) +
                               static_cast<int32_t>(gridDim.x) - 1) /
                              static_cast<int32_t>(gridDim.x);
    for (int32_t i = tid; i < my_groups * kHalfRows; i += kConsumers) {
      const int32_t k = i / kHalfRows, r = i % kHalfRows;
      const float g = gu_out[k * kTileRows + r], u = gu_out[k * kTileRows + kHalfRows + r];
      const int32_t j = (blockIdx.x + k * gridDim.x) * kHalfRows + r;
      StoreTagged(ex(kAct) + j, g / (1.f + __expf(-g)) * u, tag);
    }
    TraceStage(a.trace, stage + 3, true, tid);
    // down
    LoadExchanged(ex(kAct), tag, I, region, tid, a.poll_sleep_ns);
    TraceStage(a.trace, stage + 4, false, tid);
    ConsumeMatrix(H, I, region, 1.f, w.down_bias, ring, warp, lane,
                  trace_ns ? trace_ns + 4 : nullptr,
                  residual_to(ExchangeOf(a, l + 1, kXIn, QD, NQKV), tag + 1));
    TraceStage(a.trace, stage + 4, true, tid);
  }
  if (a.want_logits) {
    const float inv = LoadNormed(ExchangeOf(a, a.L, kXIn, QD, NQKV),
                                 a.epoch * static_cast<uint32_t>(a.L + 1) + a.L, nullptr,
                                 a.final_norm, H, a.eps, region, red, tid, warp, lane,
                                 a.poll_sleep_ns);
    ConsumeMatrix(a.V, H, region, inv, nullptr, ring, warp, lane,
                  trace_ns ? trace_ns + 5 : nullptr,
                  [&](int32_t, int32_t, int, int32_t row, float v) { a.logits[row] = v; });
  }
  if (a.trace) {
    if (tid == 0) {
      for (int k = 0; k < 6; ++k) a.trace[wait_at + k] = ring.wait_ns[k];
    }
    ConsumerSync();
    if (blockIdx.x == 0 && tid == 0) a.trace[trace_end + 1] = GlobalTimer();
  }
}

int32_t RegionFloats(const DecodeStepArgs& a, int32_t blocks) {
  const int32_t gu_groups = (a.I / (kTileRows / 2) + blocks - 1) / blocks;
  const int32_t floats =
      StageInputFloats(a.H, a.Hq * a.D, a.I, a.D, a.Hq / a.Hkv) + gu_groups * kTileRows;
  return (floats + 3) / 4 * 4;  // 16-byte aligned barriers after it
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
  blocks = DecodeStepBlocks(a.Hq, a.Hkv, a.D, blocks);
  if (a.H > int64_t{kMaxResidRows} * blocks) return cudaErrorInvalidValue;
  int32_t region = RegionFloats(a, blocks);
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
  args.poll_sleep_ns = 32;
  if (const char* env = std::getenv("CRESCENT_STEP_SLEEP")) {  // experiments: ns between polls
    args.poll_sleep_ns = static_cast<uint32_t>(std::atoi(env));
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

int32_t DecodeStepBlocks(int32_t Hq, int32_t Hkv, int32_t D, int32_t sms) {
  return std::min(sms, (Hq + 2 * Hkv) * D / kTileRows);  // every block has q/k/v rows
}

int64_t DecodeStepExchangeWords(int32_t H, int32_t Hq, int32_t Hkv, int32_t D, int32_t I) {
  const int32_t QD = Hq * D;
  return 2 * ExchangeParityWords(H, QD, QD + 2 * Hkv * D, I) + Hkv;
}

int64_t DecodeStepTraceWords(int32_t L, int32_t blocks) {
  return int64_t{kStagesPerLayer} * L * blocks * 2 + 2 + int64_t{blocks} * 8;
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
