// Device-side building blocks of the persistent decode step
// (decode_step.cu): the block layout's constants, mbarrier and bulk-copy
// primitives, the consumer barrier and the tagged words blocks exchange
// values through. Included by decode_step.cu and decode_step_attention.cuh
// only.
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

__device__ __forceinline__ uint64_t GlobalTimer() {
  uint64_t t;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
  return t;
}

// ---- the exchange between blocks: tagged words, no barriers ----
//
// Every value one block hands to others (a row of q/k/v, of the residual
// stream, an attention output, a SwiGLU input) is stored as one 64-bit word
// {tag, float bits} with a single relaxed store, and read with relaxed
// loads that are repeated until the word carries the expected tag (the
// step's launch number and the layer, so that no buffer is ever cleared).
// A 64-bit access is single-copy atomic, so a reader never sees a new tag
// with an old value, and needs no fence, counter or barrier: the value is
// its own flag. A reader waits exactly for the values it consumes, one L2
// round trip after they were written.
__device__ __forceinline__ void StoreTagged(uint64_t* p, float v, uint32_t tag) {
  const uint64_t w = (uint64_t{tag} << 32) | __float_as_uint(v);
  asm volatile("st.relaxed.gpu.global.b64 [%0], %1;" ::"l"(p), "l"(w) : "memory");
}

// A wait that polls this often is a bug (a tag never written): trap.
constexpr long long kPollLimit = 1ll << 23;

// Between polls: `sleep_ns` (DecodeStepArgs::poll_sleep_ns) of rest.
__device__ __forceinline__ void Backoff(long long& polls, uint32_t sleep_ns) {
  if (++polls > kPollLimit) __trap();
  if (sleep_ns) __nanosleep(sleep_ns);
}

// Issues relaxed loads of n = 1, 2 or 4 consecutive words at p (16-byte
// aligned for n >= 2). No "memory" clobber: loads of several words can be
// in flight together; volatile keeps every poll.
template <int n>
__device__ __forceinline__ void LoadWords(const uint64_t* p, uint64_t* w) {
  if constexpr (n == 1) {
    asm volatile("ld.relaxed.gpu.global.b64 %0, [%1];" : "=l"(w[0]) : "l"(p) : "memory");
  } else {
#pragma unroll
    for (int i = 0; i < n; i += 2) {
      asm volatile("ld.relaxed.gpu.global.v2.b64 {%0, %1}, [%2];"
                   : "=l"(w[i]), "=l"(w[i + 1])
                   : "l"(p + i)
                   : "memory");
    }
  }
}

// Polls one word until its high half carries `tag`; returns the word.
__device__ __forceinline__ uint64_t WaitForTag(const uint64_t* word, uint32_t tag,
                                               long long& polls, uint32_t sleep_ns) {
  uint64_t v;
  LoadWords<1>(word, &v);
  while (static_cast<uint32_t>(v >> 32) != tag) {
    Backoff(polls, sleep_ns);
    LoadWords<1>(word, &v);
  }
  return v;
}

template <int n>
__device__ __forceinline__ bool AllTagged(const uint64_t* w, uint32_t tag) {
  bool ready = true;
#pragma unroll
  for (int i = 0; i < n; ++i) ready &= static_cast<uint32_t>(w[i] >> 32) == tag;
  return ready;
}

// The two words at p0 and p1 (each null for none) into v0 and v1 once they
// carry `tag`; called by all lanes of a warp together. Both are loaded at
// once; while some lane's words lack the tag, one lane polls one of them
// (fewer loads in flight through L2 beside the weight stream), then the
// warp reloads what is missing.
__device__ __forceinline__ void WarpLoadTagged2(const uint64_t* p0, const uint64_t* p1,
                                                uint32_t tag, float* v0, float* v1, int lane,
                                                uint32_t sleep_ns) {
  uint64_t w0 = 0, w1 = 0;
  if (p0) LoadWords<1>(p0, &w0);
  if (p1) LoadWords<1>(p1, &w1);
  bool r0 = !p0, r1 = !p1;
  long long polls = 0;
  while (true) {
    r0 = r0 || static_cast<uint32_t>(w0 >> 32) == tag;
    r1 = r1 || static_cast<uint32_t>(w1 >> 32) == tag;
    const unsigned pending = __ballot_sync(0xffffffffu, !(r0 && r1));
    if (pending == 0) break;
    if (lane == __ffs(pending) - 1) {
      WaitForTag(r0 ? p1 : p0, tag, polls, sleep_ns);
    }
    __syncwarp();
    if (!r0) LoadWords<1>(p0, &w0);
    if (!r1) LoadWords<1>(p1, &w1);
  }
  *v0 = __uint_as_float(static_cast<uint32_t>(w0));
  *v1 = __uint_as_float(static_cast<uint32_t>(w1));
}

// Adds `v` with acquire-release semantics at device scope; returns the old value.
__device__ __forceinline__ uint64_t AtomicAddAcqRel(uint64_t* p, uint64_t v) {
  uint64_t old;
  asm volatile("atom.acq_rel.gpu.global.add.u64 %0, [%1], %2;"
               : "=l"(old)
               : "l"(p), "l"(v)
               : "memory");
  return old;
}

// Tracing (decode_step.h): block b's time of having stage s's inputs
// (`end` false) or of having stored its outputs (`end` true).
__device__ __forceinline__ void TraceStage(uint64_t* trace, int stage, bool end, int tid) {
  if (trace && tid == 0) {
    trace[(int64_t{stage} * gridDim.x + blockIdx.x) * 2 + (end ? 1 : 0)] = GlobalTimer();
  }
}

}  // namespace crescent::model::cuda::step
