// Device-side building blocks of the persistent decode step
// (decode_step.cu): the block layout's constants, mbarrier and bulk-copy
// primitives, the consumer barrier and the grid barrier. Included by
// decode_step.cu and decode_step_attention.cuh only.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "model/cuda/decode_step.h"

namespace crescent::model::cuda::step {

constexpr int kConsumerWarps = 8;
constexpr int kConsumers = kConsumerWarps * 32;
constexpr int kThreads = kConsumers + 32;  // + the producer warp (last)
constexpr int kTileRows = kConsumerWarps;  // one row per consumer warp
constexpr int kMaxChunk = 1024;            // columns per tile
constexpr int kSlotBytes = kTileRows * kMaxChunk * 2;
constexpr int kStagesPerLayer = 5;
constexpr int kMaxGroup = 8;
// Residual rows a block keeps in shared memory: H <= kMaxResidRows x blocks.
constexpr int kMaxResidRows = 256;
// Static shared memory of the kernel stays below this (resid, red, flags).
constexpr int kStaticSmemBound = 2048;
constexpr float kLog2e = 1.4426950408889634f;
// A wait that spins this long is a bug: trap (the launch fails with an
// error) rather than hang the device.
constexpr long long kSpinLimit = 1ll << 26;

__device__ __forceinline__ uint32_t SmemAddr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void MbarInit(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(SmemAddr(bar)), "r"(count));
}
__device__ __forceinline__ void MbarExpectTx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(SmemAddr(bar)),
               "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void MbarArrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(SmemAddr(bar)) : "memory");
}
// A consumer's "done with this slot": relaxed, so that it does not wait
// for the consumer's outstanding global stores and loads (a release would:
// ~0.5 us per tile measured). The slot's shared-memory reads are complete:
// their values were consumed before this point.
__device__ __forceinline__ void MbarArriveRelaxed(uint64_t* bar) {
  asm volatile("mbarrier.arrive.relaxed.cta.shared::cta.b64 _, [%0];" ::"r"(SmemAddr(bar))
               : "memory");
}
__device__ __forceinline__ void MbarWait(uint64_t* bar, uint32_t parity) {
  uint32_t done = 0;
  long long spins = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(SmemAddr(bar)), "r"(parity)
        : "memory");
    if (++spins > kSpinLimit) __trap();
  } while (!done);
}
__device__ __forceinline__ void BulkCopy(void* dst, const void* src, uint32_t bytes,
                                         uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(SmemAddr(dst)),
      "l"(src), "r"(bytes), "r"(SmemAddr(bar))
      : "memory");
}
// Barrier of the 256 consumer threads (the producer warp never joins).
__device__ __forceinline__ void ConsumerSync() {
  asm volatile("bar.sync 1, %0;" ::"n"(kConsumers) : "memory");
}

// Grid-wide barrier of the consumers: every block adds 1 to this stage's
// counter (zeroed before the launch) and waits until all have.
__device__ __forceinline__ uint64_t GlobalTimer() {
  uint64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// Grid-wide barrier of the consumers: every block adds 1 to this stage's
// counter and waits until it reaches `target` (launch number x blocks: the
// counters only grow, so no launch has to clear them). The release add
// orders the block's writes (ordered before it by the consumer barrier)
// before the waiters' acquire loads.
// With `trace`: block b's arrival at barrier s goes to trace[s * grid + b],
// block 0's release to trace[stages * grid + s].
// `while_waiting` runs on every consumer thread between the arrival and the
// wait (thread 0 after its release add, so none of its loads delay it).
template <typename WhileWaiting>
__device__ void GridSync(uint32_t* counter, uint32_t target, int tid, uint64_t* trace, int stage,
                         int stages, WhileWaiting&& while_waiting, uint32_t ablate) {
  ConsumerSync();
  if (ablate & 16) {
    while_waiting();
    ConsumerSync();
    return;
  }
  if (tid == 0) {
    if (trace) trace[int64_t{stage} * gridDim.x + blockIdx.x] = GlobalTimer();
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(counter) : "memory");
  }
  while_waiting();
  if (tid == 0) {
    uint32_t v;
    long long spins = 0;
    while (true) {
      asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(counter) : "memory");
      if (static_cast<int32_t>(v - target) >= 0) break;
      if (++spins > kSpinLimit) __trap();
    }
    if (trace && blockIdx.x == 0) trace[int64_t{stages} * gridDim.x + stage] = GlobalTimer();
  }
  ConsumerSync();
}
__device__ __forceinline__ void GridSync(uint32_t* counter, uint32_t target, int tid,
                                         uint64_t* trace, int stage, int stages, uint32_t ablate) {
  GridSync(counter, target, tid, trace, stage, stages, [] {}, ablate);
}

// Block b's time of reaching the middle of stage s (inputs loaded) goes to
// trace[stages * (grid + 1) + 2 + s * grid + b].
__device__ __forceinline__ void TraceMid(uint64_t* trace, int stage, int stages, int tid) {
  if (trace && tid == 0) {
    trace[int64_t{stages} * (gridDim.x + 1) + 2 + int64_t{stage} * gridDim.x + blockIdx.x] =
        GlobalTimer();
  }
}

}  // namespace crescent::model::cuda::step
