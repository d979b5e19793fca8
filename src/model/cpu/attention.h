// Causal attention of new tokens over a paged KV pool (CPU, float32).
#pragma once

#include <cstdint>
#include <span>

#include "model/cpu/thread_pool.h"
#include "model/kv_layout.h"

namespace crescent::model::cpu {

// One new token's view of its sequence.
struct AttentionToken {
  int32_t position;                      // attends to positions [0, position]
  std::span<const int32_t> block_table;  // covers [0, position]
};

// For every token t and query head h:
//   out[t][h*D..] = softmax(q[t][h*D..] . K[0..position] * scale)
//   V[0..position]
// with K/V of kv head h / (Hq/Hkv) read from `pool` (blocks in the
// KvBlockLayout) at layer `layer`. q: [T][Hq*D], out: [T][Hq*D].
void PagedAttention(ThreadPool& pool, std::span<const AttentionToken> tokens, const float* q,
                    int32_t num_heads, const KvBlockLayout& layout, const float* kv_pool,
                    int32_t layer, float scale, float* out);

// The same in plain scalar loops (double accumulation), for tests.
void PagedAttentionReference(std::span<const AttentionToken> tokens, const float* q,
                             int32_t num_heads, const KvBlockLayout& layout, const float* kv_pool,
                             int32_t layer, float scale, float* out);

}  // namespace crescent::model::cpu
