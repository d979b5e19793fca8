#include "model/cpu/attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "model/cpu/kernels.h"

namespace crescent::model::cpu {

namespace {

// Queries of one sequence processed together against each K/V block:
// a block's keys and values are read once per tile from L2/L3 instead of
// once per query (prefill of 512 tokens re-read the whole KV per query).
constexpr int32_t kQueryTile = 16;

inline float DotInline(const float* a, const float* b, int32_t n) {
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  int32_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
  }
  return _mm512_reduce_add_ps(acc);
#else
  return Dot(a, b, n);
#endif
}

// o[0..D) += sum_s p[s] * v[s][0..D): one load/store of o per 16 dims
// per block rather than per key.
inline void WeightedSumInto(const float* p, const float* v, int32_t n, int32_t D, float* o) {
#if defined(__AVX512F__)
  for (int32_t d = 0; d < D; d += 16) {
    const __mmask16 m =
        D - d >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (D - d)) - 1);
    __m512 acc = _mm512_maskz_loadu_ps(m, o + d);
    for (int32_t s = 0; s < n; ++s) {
      acc = _mm512_fmadd_ps(_mm512_set1_ps(p[s]), _mm512_maskz_loadu_ps(m, v + s * D + d), acc);
    }
    _mm512_mask_storeu_ps(o + d, m, acc);
  }
#else
  for (int32_t s = 0; s < n; ++s) Axpy(p[s], v + s * D, D, o);
#endif
}

#if defined(__AVX512F__)
// Query rows per tile from which scores go through a transposed copy of
// each K block: 16 keys scored per row with D broadcast-FMAs and no
// horizontal sums. Below it (decode) the transpose would cost more.
constexpr int32_t kTransposeMinRows = 4;

// Scores of all rows of a tile against keys [j0, j0 + m) of one block
// (k: [m][D]); row (qi, hi) only for keys <= first_position + qi.
template <typename QRow>
void ScoresTransposed(const float* k, int32_t j0, int32_t m, int32_t D, int32_t first_position,
                      int32_t last_position, int32_t count, int32_t group, float scale,
                      const QRow& q_row, float* scores, int32_t n_keys) {
  thread_local std::vector<float> kt;  // [D][16]
  kt.resize(static_cast<size_t>(D) * 16);
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int32_t s0 = 0; s0 < m; s0 += 16) {
    const int32_t need = std::min({16, m - s0, last_position + 1 - (j0 + s0)});
    if (need <= 0) break;
    // 16x16 sub-blocks: gather 16 keys' dims d..d+15 with one strided
    // gather per output row; lanes past `need` read as zero.
    const __mmask16 lanes = static_cast<__mmask16>((1u << need) - 1);
    const __m512i stride = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(D));
    const float* kbase = k + static_cast<size_t>(s0) * D;
    for (int32_t d = 0; d < D; ++d) {
      _mm512_storeu_ps(&kt[d * 16],
                       _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lanes, stride, kbase + d, 4));
    }
    for (int32_t qi = 0; qi < count; ++qi) {
      const int32_t limit = std::min(need, first_position + qi + 1 - (j0 + s0));
      if (limit <= 0) continue;
      const __mmask16 mask = static_cast<__mmask16>((1u << limit) - 1);
      for (int32_t hi = 0; hi < group; ++hi) {
        const float* qv = q_row(qi, hi);
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        int32_t d = 0;
        for (; d + 2 <= D; d += 2) {
          acc0 = _mm512_fmadd_ps(_mm512_set1_ps(qv[d]), _mm512_loadu_ps(&kt[d * 16]), acc0);
          acc1 =
              _mm512_fmadd_ps(_mm512_set1_ps(qv[d + 1]), _mm512_loadu_ps(&kt[(d + 1) * 16]), acc1);
        }
        if (d < D)
          acc0 = _mm512_fmadd_ps(_mm512_set1_ps(qv[d]), _mm512_loadu_ps(&kt[d * 16]), acc0);
        float* srow = scores + static_cast<size_t>(qi * group + hi) * n_keys + j0 + s0;
        _mm512_mask_storeu_ps(srow, mask, _mm512_mul_ps(_mm512_add_ps(acc0, acc1), vscale));
      }
    }
  }
}
#endif

// A run of queries: tokens [first, first + count) of one sequence at
// consecutive positions, all with the same block table.
struct QueryTile {
  int32_t first;
  int32_t count;
};

}  // namespace

void PagedAttention(ThreadPool& pool, std::span<const AttentionToken> tokens, const float* q,
                    int32_t num_heads, const KvBlockLayout& layout, const float* kv_pool,
                    int32_t layer, float scale, float* out) {
  const int32_t D = layout.head_dim, B = layout.block_size, Hkv = layout.num_kv_heads;
  const int32_t group = num_heads / Hkv;
  const size_t block_elems = layout.BlockElements();
  thread_local std::vector<QueryTile> tiles;
  tiles.clear();
  for (int32_t t = 0; t < static_cast<int32_t>(tokens.size()); ++t) {
    if (!tiles.empty()) {
      QueryTile& last = tiles.back();
      const AttentionToken& prev = tokens[last.first + last.count - 1];
      if (last.count < kQueryTile && prev.block_table.data() == tokens[t].block_table.data() &&
          prev.position + 1 == tokens[t].position) {
        ++last.count;
        continue;
      }
    }
    tiles.push_back({t, 1});
  }
  const std::vector<QueryTile>& all = tiles;
  // Items: (kv head, tile); each handles the `group` query heads of its kv
  // head.
  const int64_t items = static_cast<int64_t>(all.size()) * Hkv;
  pool.ParallelFor(items, 1, [&](int64_t begin, int64_t end, int) {
    thread_local std::vector<float> scores;  // [count][group][n_keys]
    for (int64_t item = begin; item < end; ++item) {
      // Head-major: a thread's consecutive items are the tiles of one kv
      // head, whose K/V (512 KiB for 512 tokens of Qwen3-0.6B) then stay in
      // its L2 instead of streaming from L3 once per tile.
      const QueryTile& tile = all[item % all.size()];
      const int32_t g = static_cast<int32_t>(item / static_cast<int64_t>(all.size()));
      const AttentionToken& first = tokens[tile.first];
      const int32_t n_keys = tokens[tile.first + tile.count - 1].position + 1;
      const int32_t rows = tile.count * group;
      scores.resize(static_cast<size_t>(rows) * n_keys);
      auto q_row = [&](int32_t qi, int32_t hi) {
        return q + (static_cast<int64_t>(tile.first + qi) * num_heads + g * group + hi) * D;
      };
      auto out_row = [&](int32_t qi, int32_t hi) {
        return out + (static_cast<int64_t>(tile.first + qi) * num_heads + g * group + hi) * D;
      };
      // Pass 1: scores, one K block at a time.
      const int32_t last_position = first.position + tile.count - 1;
      for (int32_t j0 = 0, b = 0; j0 < n_keys; j0 += B, ++b) {
        const float* k = kv_pool + first.block_table[b] * block_elems +
                         layout.ElementOffset(layer, kKvKindKey, g, 0);
        const int32_t m = std::min(B, n_keys - j0);
#if defined(__AVX512F__)
        if (rows >= kTransposeMinRows) {
          ScoresTransposed(k, j0, m, D, first.position, last_position, tile.count, group, scale,
                           q_row, scores.data(), n_keys);
          continue;
        }
#endif
        for (int32_t qi = 0; qi < tile.count; ++qi) {
          // Query qi sees keys up to its own position.
          const int32_t limit = std::min(m, first.position + qi + 1 - j0);
          for (int32_t hi = 0; hi < group; ++hi) {
            const float* qv = q_row(qi, hi);
            float* srow = scores.data() + static_cast<size_t>(qi * group + hi) * n_keys + j0;
            for (int32_t s = 0; s < limit; ++s) srow[s] = DotInline(qv, k + s * D, D) * scale;
          }
        }
      }
      // Softmax per row over its causal range.
      for (int32_t qi = 0; qi < tile.count; ++qi) {
        const int32_t n = first.position + qi + 1;
        for (int32_t hi = 0; hi < group; ++hi) {
          float* srow = scores.data() + static_cast<size_t>(qi * group + hi) * n_keys;
          float mx = -INFINITY;
          for (int32_t j = 0; j < n; ++j) mx = std::max(mx, srow[j]);
          const float inv_sum = 1.0f / ExpSubtractSum(srow, n, mx);
          for (int32_t j = 0; j < n; ++j) srow[j] *= inv_sum;
          std::memset(out_row(qi, hi), 0, sizeof(float) * D);
        }
      }
      // Pass 2: weighted values, one V block at a time.
      for (int32_t j0 = 0, b = 0; j0 < n_keys; j0 += B, ++b) {
        const float* v = kv_pool + first.block_table[b] * block_elems +
                         layout.ElementOffset(layer, kKvKindValue, g, 0);
        const int32_t m = std::min(B, n_keys - j0);
        for (int32_t qi = 0; qi < tile.count; ++qi) {
          const int32_t limit = std::min(m, first.position + qi + 1 - j0);
          for (int32_t hi = 0; hi < group; ++hi) {
            const float* srow = scores.data() + static_cast<size_t>(qi * group + hi) * n_keys + j0;
            WeightedSumInto(srow, v, limit, D, out_row(qi, hi));
          }
        }
      }
    }
  });
}

void PagedAttentionReference(std::span<const AttentionToken> tokens, const float* q,
                             int32_t num_heads, const KvBlockLayout& layout, const float* kv_pool,
                             int32_t layer, float scale, float* out) {
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
