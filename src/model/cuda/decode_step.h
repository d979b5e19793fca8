// The persistent single-token decode step (decode_step.cu): one
// cooperative launch runs a whole batch-1 decode step (embedding, every
// layer, final norm, lm_head) instead of ~170 dependent kernels.
//
// Why: at batch 1 the step is bound by streaming the weights once, and
// Qwen3-0.6B's per-layer matrices (4-13 MB, 1.4-4 us of HBM time each) are
// too small to hide the fixed cost of a kernel boundary (launch, ramp,
// drain: ~3-6 us each). Here one block per multiprocessor runs all stages;
// a producer warp per block streams the block's share of every weight
// matrix of the step, in the order the stages use them, into a ring of
// shared-memory tiles (bulk copies completing on mbarriers) without ever
// waiting for activations, so HBM keeps streaming through the grid-wide
// barriers between stages; eight consumer warps compute each stage from
// the ring and meet at a grid barrier (one atomic counter per stage).
//
// Stages per layer: q/k/v GEMV (input RMSNorm fused) | attention (q/k-norm,
// RoPE with the host's tables and the KV write of the new token fused; split
// over the context, each block's first K/V rows loaded while it waits at
// the barrier before) | o_proj GEMV (the splits merged as its input is
// loaded; +residual) | gate/up GEMV (post-attention RMSNorm fused) | down
// GEMV (SwiGLU fused, +residual). Then the final norm and lm_head into the
// logits row. Each block keeps the residual rows it owns in shared memory.
//
// Measured on an H100 (docs/benchmarks.md): ~1.0 ms per Qwen3-0.6B step,
// ~1.15 ms per Llama-3.2-1B step. What it costs (CRESCENT_STEP_TRACE,
// CRESCENT_STEP_ABLATE): the weight stream alone runs at ~2.4 TB/s, but the
// ring holds under one layer, so it cannot run ahead through a layer's
// chain of grid barriers (~0.7-2 us each) and L2 round trips; prefetching
// further ahead into L2 measured slower.
//
// Numerics as the fused GEMV path (gemv.cu): bf16 weights and K/V, float32
// activations and accumulation.
//
// Internal to src/model/cuda.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "model/cuda/kernels.h"

namespace crescent::model::cuda {

// One layer's weights as the step reads them (device pointers).
struct StepLayer {
  const bf16_t* qkv;      // [Hq*D + 2*Hkv*D][H]
  const bf16_t* o;        // [H][Hq*D]
  const bf16_t* gate_up;  // [2I][H]
  const bf16_t* down;     // [H][I]
  const float* input_norm;
  const float* post_norm;
  const float* q_norm;    // or null
  const float* k_norm;    // or null
  const float* qkv_bias;  // or null
  const float* o_bias;    // or null
  const float* down_bias; // or null
};

struct DecodeStepArgs {
  const StepLayer* layers;   // device array [L]
  const bf16_t* embed;       // [V][H]
  const bf16_t* lm_head;     // [V][H]
  const float* final_norm;   // [H]
  const float* rope;         // device: cos[D/2] then sin[D/2] of the position
  const int32_t* token;      // device: the token id
  const int32_t* position;   // device: its position
  const int32_t* block_table;  // device: the sequence's block table
  bf16_t* kv_pool;
  float* x;        // [H] residual stream
  float* qkv;      // [Hq*D + 2*Hkv*D]
  float* gu;       // [2I]
  float* partial;  // [Hq][max splits][D + 2]
  float* logits;   // [V], written when want_logits
  // DecodeStepSyncWords(L) stage counters, zeroed once; launch number
  // `epoch` (1, 2, ...) waits for each to reach epoch x blocks.
  uint32_t* sync;
  uint32_t epoch;
  // Null, or DecodeStepTraceWords(L, blocks) timestamps (ns, %globaltimer):
  // [s * blocks + b] block b's arrival at barrier s (5 per layer: after
  // q/k/v, attention, o_proj, gate/up, down), [5L * blocks + s] block 0's
  // release from it, [5L * blocks + 5L] the start, [.. + 1] block 0's end.
  uint64_t* trace;
  // Experiments only (CRESCENT_STEP_ABLATE; wrong results): skip parts to
  // time them: 1 GEMV arithmetic, 2 attention, 4 split merge, 8 stage input
  // loads, 16 grid barriers, 32 weight copies.
  uint32_t ablate;
  int32_t H, Hq, Hkv, D, I, V, L, B;
  float eps, scale;
  int32_t want_logits;
};

// Whether the step supports this shape: H, Hq*D and I multiples of 256,
// D in {32, 64, 128}, 1 <= Hq/Hkv <= 8, no gate/up bias.
bool DecodeStepSupports(int32_t H, int32_t Hq, int32_t Hkv, int32_t D, int32_t I,
                        bool gate_up_bias);

// Words of `sync`: one counter per grid barrier.
int64_t DecodeStepSyncWords(int32_t L);

int64_t DecodeStepTraceWords(int32_t L, int32_t blocks);

// Floats of `partial` for a grid of `blocks` blocks.
int64_t DecodeStepPartialFloats(int32_t Hq, int32_t Hkv, int32_t D, int32_t blocks);

// Launches the step on `stream` with one block per
// multiprocessor (cooperative launch: all blocks resident). `blocks` is the
// multiprocessor count.
cudaError_t LaunchDecodeStep(const DecodeStepArgs& a, int32_t blocks, cudaStream_t stream);

}  // namespace crescent::model::cuda
