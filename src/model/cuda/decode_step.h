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
// waiting for activations, so HBM keeps streaming while the consumers
// wait for their inputs; eight consumer warps compute each stage from the
// ring.
//
// No grid-wide barrier: blocks hand each other values as tagged 64-bit
// words (decode_step_device.cuh), and every consumer waits only for the
// values it reads, about one L2 round trip after they are written (a grid
// barrier cost a release fence, 132 atomics on one word, a poll and then
// the load of the input, five times a layer).
//
// Stages per layer: q/k/v GEMV (input RMSNorm recomputed by every block)
// | attention (q/k-norm, RoPE with the host's tables and the KV write of
// the new token fused; split over the context, each block's first K/V rows
// loaded before it waits for q/k/v; the block finishing a KV head's last
// split merges the head's splits) | o_proj GEMV (+residual) | gate/up GEMV
// (post-attention RMSNorm recomputed; a tile holds 4 gate and the 4
// matching up rows, so the SwiGLU is applied where they are computed) |
// down GEMV (+residual). Then the final norm and lm_head into the logits
// row. Each block keeps the residual rows it owns in shared memory.
//
// Measured on an H100 (docs/benchmarks.md, "batch-1 decode"): ~0.90 ms per
// Qwen3-0.6B step, ~1.16 ms per Llama-3.2-1B step. What bounds it: the
// chain of dependent hand-offs and stage work per layer, not HBM; with the
// weight copies switched off (CRESCENT_STEP_ABLATE=32) the Qwen3 step
// still takes ~0.73-0.76 ms, ~23 us per layer.
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
  float* partial;  // [Hq][max splits][D + 2]
  float* logits;   // [V], written when want_logits
  // DecodeStepExchangeWords(...) words, zeroed once: the tagged exchange
  // buffers (`exchange`), then one counter per KV head of its finished
  // attention splits (`head_counters`).
  uint64_t* exchange;
  uint64_t* head_counters;
  // Launch number (1, 2, ...): the tags of this launch's exchanged values.
  uint32_t epoch;
  // Null, or DecodeStepTraceWords(L, blocks) timestamps (ns, %globaltimer):
  // [(s * blocks + b) * 2] block b has the inputs of stage s (5 per layer:
  // q/k/v, attention, o_proj, gate/up, down), [.. + 1] it has stored its
  // outputs; then [2 * 5L * blocks] the start and [.. + 1] the end (block
  // 0), then per block 8 words of time spent waiting for tiles (per matrix
  // kind: 0 q/k/v, 2 o, 3 gate/up, 4 down, 5 lm_head; 6 its producer's wait
  // for free slots).
  uint64_t* trace;
  // Experiments only (CRESCENT_STEP_ABLATE; wrong results): skip parts to
  // time them: 1 GEMV arithmetic, 32 weight copies, 64 everything.
  uint32_t ablate;
  // Rest between two polls of a word not yet written (ns; 0: none). 32 by
  // default; CRESCENT_STEP_SLEEP for experiments (0, 32 and 200 measured
  // alike).
  uint32_t poll_sleep_ns;
  int32_t H, Hq, Hkv, D, I, V, L, B;
  float eps, scale;
  int32_t want_logits;
};

// Whether the step supports this shape: H, Hq*D and I multiples of 256,
// D in {32, 64, 128}, 1 <= Hq/Hkv <= 8, no gate/up bias.
bool DecodeStepSupports(int32_t H, int32_t Hq, int32_t Hkv, int32_t D, int32_t I,
                        bool gate_up_bias);

// 64-bit words of DecodeStepArgs::exchange (the exchange buffers and the
// head counters behind them).
int64_t DecodeStepExchangeWords(int32_t H, int32_t Hq, int32_t Hkv, int32_t D, int32_t I);

int64_t DecodeStepTraceWords(int32_t L, int32_t blocks);

// Floats of `partial` for a grid of `blocks` blocks.
int64_t DecodeStepPartialFloats(int32_t Hq, int32_t Hkv, int32_t D, int32_t blocks);

// Blocks the step runs on a device of `sms` multiprocessors: one per
// multiprocessor, at most one per 8 rows of the q/k/v projection (every
// block must produce some of every layer's q/k/v for the exchange buffers
// to be reused two layers later).
int32_t DecodeStepBlocks(int32_t Hq, int32_t Hkv, int32_t D, int32_t sms);

// Launches the step on `stream` (cooperative launch: all blocks resident);
// `blocks` is the multiprocessor count.
cudaError_t LaunchDecodeStep(const DecodeStepArgs& a, int32_t blocks, cudaStream_t stream);

}  // namespace crescent::model::cuda
