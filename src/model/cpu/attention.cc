#include "model/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "model/cpu/kernels.h"

namespace crescent::model::cpu {

void PagedAttention(ThreadPool& pool, std::span<const AttentionToken> tokens, const float* q,
                    int32_t num_heads, const KvBlockLayout& layout, const float* kv_pool,
                    int32_t layer, float scale, float* out) {
  const int32_t D = layout.head_dim, B = layout.block_size;
  const int32_t group = num_heads / layout.num_kv_heads;
  const size_t block_elems = layout.BlockElements();
  const int64_t items = static_cast<int64_t>(tokens.size()) * num_heads;
  pool.ParallelFor(items, 1, [&](int64_t begin, int64_t end, int) {
    thread_local std::vector<float> scores;
    for (int64_t item = begin; item < end; ++item) {
      const AttentionToken& tok = tokens[item / num_heads];
      const int32_t h = static_cast<int32_t>(item % num_heads);
      const int32_t g = h / group;
      const float* qh = q + (item / num_heads) * num_heads * D + h * D;
      float* oh = out + (item / num_heads) * num_heads * D + h * D;
      const int32_t n = tok.position + 1;
      scores.resize(n);
      float max_score = -INFINITY;
      for (int32_t j0 = 0, b = 0; j0 < n; j0 += B, ++b) {
        const float* k = kv_pool + tok.block_table[b] * block_elems +
                         layout.ElementOffset(layer, kKvKindKey, g, 0);
        const int32_t m = std::min(B, n - j0);
        for (int32_t s = 0; s < m; ++s) {
          const float v = Dot(qh, k + s * D, D) * scale;
          scores[j0 + s] = v;
          max_score = std::max(max_score, v);
        }
      }
      const float inv_sum = 1.0f / ExpSubtractSum(scores.data(), n, max_score);
      std::memset(oh, 0, sizeof(float) * D);
      for (int32_t j0 = 0, b = 0; j0 < n; j0 += B, ++b) {
        const float* v = kv_pool + tok.block_table[b] * block_elems +
                         layout.ElementOffset(layer, kKvKindValue, g, 0);
        const int32_t m = std::min(B, n - j0);
        for (int32_t s = 0; s < m; ++s) Axpy(scores[j0 + s], v + s * D, D, oh);
      }
      for (int32_t d = 0; d < D; ++d) oh[d] *= inv_sum;
    }
  });
}

void PagedAttentionReference(std::span<const AttentionToken> tokens, const float* q,
                             int32_t num_heads, const KvBlockLayout& layout,
                             const float* kv_pool, int32_t layer, float scale, float* out) {
  const int32_t D = layout.head_dim, B = layout.block_size;
  const int32_t group = num_heads / layout.num_kv_heads;
  const size_t block_elems = layout.BlockElements();
  for (size_t t = 0; t < tokens.size(); ++t) {
    for (int32_t h = 0; h < num_heads; ++h) {
      const int32_t g = h / group, n = tokens[t].position + 1;
      const float* qh = q + (t * num_heads + h) * D;
      auto at = [&](int kind, int32_t j) {
        return kv_pool + tokens[t].block_table[j / B] * block_elems +
               layout.ElementOffset(layer, kind, g, j % B);
      };
      std::vector<double> p(n);
      double mx = -INFINITY, sum = 0;
      for (int32_t j = 0; j < n; ++j) {
        double s = 0;
        for (int32_t d = 0; d < D; ++d) s += static_cast<double>(qh[d]) * at(kKvKindKey, j)[d];
        p[j] = s * scale;
        mx = std::max(mx, p[j]);
      }
      for (double& v : p) sum += (v = std::exp(v - mx));
      for (int32_t d = 0; d < D; ++d) {
        double acc = 0;
        for (int32_t j = 0; j < n; ++j) acc += p[j] * at(kKvKindValue, j)[d];
        out[(t * num_heads + h) * D + d] = static_cast<float>(acc / sum);
      }
    }
  }
}

}  // namespace crescent::model::cpu
