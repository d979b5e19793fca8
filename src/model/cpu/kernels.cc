#include "model/cpu/kernels.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "model/weights.h"

namespace crescent::model::cpu {
namespace {

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define CRESCENT_AVX512 1
#endif

// Weight rows (C columns) per GEMM task: 4 panels of 32, so that an A
// tile is reused from L1 across them and two threads get >= 4 tasks each
// for the smallest projections.
constexpr int64_t kGemmSlabColumns = 128;
// Weight rows per GEMV task: enough tasks to balance two threads, few
// enough that the per-task overhead stays negligible.
constexpr int64_t kGemvRowsPerTask = 64;
// How far ahead (elements) the GEMV prefetches each weight row.
constexpr int64_t kPrefetchElements = 512;

#ifdef CRESCENT_AVX512
template <DType DT>
inline __m512 Load16(const void* base, int64_t k) {
  if constexpr (DT == DType::kBF16) {
    __m256i h = _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + k));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else if constexpr (DT == DType::kF16) {
    __m256i h = _mm256_loadu_si256(
        reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(base) + k));
    return _mm512_cvtph_ps(h);
  } else {
    return _mm512_loadu_ps(static_cast<const float*>(base) + k);
  }
}

template <DType DT>
inline __m512 Load16Masked(const void* base, int64_t k, __mmask16 mask) {
  if constexpr (DT == DType::kBF16) {
    __m256i h = _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(base) + k);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else if constexpr (DT == DType::kF16) {
    __m256i h = _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(base) + k);
    return _mm512_cvtph_ps(h);
  } else {
    return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(base) + k);
  }
}

// out[r][c] = dot(x row r, w row c) for R activation rows and C weight rows;
// each weight vector is widened once and used R times.
template <DType DT, int R, int C>
void GemvTile(const void* const* w_rows, const float* x, int64_t ldx, int64_t K, float* out) {
  __m512 acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  constexpr int64_t kEsize = DT == DType::kF32 ? 4 : 2;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 wv[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) {
      // Stream ahead of the hardware prefetcher: decode is bound by how
      // many weight bytes are in flight.
      _mm_prefetch(static_cast<const char*>(w_rows[c]) + (k + kPrefetchElements) * kEsize,
                   _MM_HINT_T0);
      wv[c] = Load16<DT>(w_rows[c], k);
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      __m512 xv = _mm512_loadu_ps(x + r * ldx + k);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  if (k < K) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (K - k)) - 1);
    __m512 wv[C];
    for (int c = 0; c < C; ++c) wv[c] = Load16Masked<DT>(w_rows[c], k, mask);
    for (int r = 0; r < R; ++r) {
      __m512 xv = _mm512_maskz_loadu_ps(mask, x + r * ldx + k);
      for (int c = 0; c < C; ++c) acc[r][c] = _mm512_fmadd_ps(xv, wv[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) out[r * C + c] = _mm512_reduce_add_ps(acc[r][c]);
}

using TileFn = void (*)(const void* const*, const float*, int64_t, int64_t, float*);

template <DType DT>
TileFn PickTile(int r, int c) {
  static constexpr TileFn kTable[4][4] = {
      {GemvTile<DT, 1, 1>, GemvTile<DT, 1, 2>, GemvTile<DT, 1, 3>, GemvTile<DT, 1, 4>},
      {GemvTile<DT, 2, 1>, GemvTile<DT, 2, 2>, GemvTile<DT, 2, 3>, GemvTile<DT, 2, 4>},
      {GemvTile<DT, 3, 1>, GemvTile<DT, 3, 2>, GemvTile<DT, 3, 3>, GemvTile<DT, 3, 4>},
      {GemvTile<DT, 4, 1>, GemvTile<DT, 4, 2>, GemvTile<DT, 4, 3>, GemvTile<DT, 4, 4>}};
  return kTable[r - 1][c - 1];
}

// [F32, BF16, F16] single-row kernels over 8 weight rows.
constexpr TileFn kGemv8[3] = {GemvTile<DType::kF32, 1, 8>, GemvTile<DType::kBF16, 1, 8>,
                              GemvTile<DType::kF16, 1, 8>};

TileFn PickTile(DType dt, int r, int c) {
  switch (dt) {
    case DType::kBF16:
      return PickTile<DType::kBF16>(r, c);
    case DType::kF16:
      return PickTile<DType::kF16>(r, c);
    default:
      return PickTile<DType::kF32>(r, c);
  }
}

// exp(x) for x in float range, Cephes polynomial, ~1 ulp.
inline __m512 Exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  __m512 r2 = _mm512_mul_ps(r, r);
  __m512 y = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(y, n);
}
#endif  // CRESCENT_AVX512

// Rows [begin, end) of one target through the GEMV path.
void GemvRows(const float* x, int64_t m, int64_t ldx, const MatMulTarget& t, int64_t begin,
              int64_t end) {
  const int64_t K = t.w.cols;
  const size_t esize = DTypeSize(t.w.dtype);
  const char* base = static_cast<const char*>(t.w.data);
#ifdef CRESCENT_AVX512
  float tile[16];
  int64_t n = begin;
  if (m == 1) {
    // Batch-1 decode: 8 weight rows in flight per thread for more memory
    // parallelism; no activation-row reuse to trade against.
    for (; n + 8 <= end; n += 8) {
      const void* rows[8];
      for (int i = 0; i < 8; ++i) rows[i] = base + (n + i) * K * esize;
      kGemv8[static_cast<int>(t.w.dtype == DType::kBF16) + 2 * (t.w.dtype == DType::kF16)](
          rows, x, ldx, K, tile);
      for (int j = 0; j < 8; ++j) t.y[n + j] = tile[j] + (t.bias ? t.bias[n + j] : 0.0f);
    }
  }
  for (; n < end; n += 4) {
    const int c = static_cast<int>(std::min<int64_t>(4, end - n));
    const void* rows[4];
    for (int i = 0; i < c; ++i) rows[i] = base + (n + i) * K * esize;
    for (int64_t r0 = 0; r0 < m; r0 += 4) {
      const int r = static_cast<int>(std::min<int64_t>(4, m - r0));
      PickTile(t.w.dtype, r, c)(rows, x + r0 * ldx, ldx, K, tile);
      for (int i = 0; i < r; ++i) {
        for (int j = 0; j < c; ++j) {
          t.y[(r0 + i) * t.ldy + n + j] = tile[i * c + j] + (t.bias ? t.bias[n + j] : 0.0f);
        }
      }
    }
  }
#else
  std::vector<float> row(K);
  for (int64_t n = begin; n < end; ++n) {
    WidenRow(t.w.dtype, base + n * K * esize, K, row.data());
    for (int64_t r = 0; r < m; ++r) {
      t.y[r * t.ldy + n] = Dot(x + r * ldx, row.data(), K) + (t.bias ? t.bias[n] : 0.0f);
    }
  }
#endif
}

#ifdef CRESCENT_AVX512
// Packed GEMM for prefill: C[m][n] = sum_k A[m][k] * W[n][k].
// W is widened and transposed, kGemmNr columns at a time, into panels
// Bp[k][kGemmNr] of kGemmKc rows (16 KiB: L1-resident while a micro-kernel
// sweeps it); A is read in place, kGemmMr rows broadcast one k at a time.
// Each micro-kernel keeps a kGemmMr x 32 tile of C in 24 zmm registers.
constexpr int kGemmMr = 12;
constexpr int kGemmNr = 32;
constexpr int kGemmKc = 128;

// acc (+)= A[0..MR)[k0..k0+kc) * Bp; stores `cols` (<= 32) columns of C.
template <int MR>
void GemmMicroKernel(const float* a, int64_t lda, const float* bp, int kc, float* c, int64_t ldc,
                     int cols, bool accumulate) {
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    acc0[r] = _mm512_setzero_ps();
    acc1[r] = _mm512_setzero_ps();
  }
  for (int k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_loadu_ps(bp + k * kGemmNr);
    const __m512 b1 = _mm512_loadu_ps(bp + k * kGemmNr + 16);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k]);
      acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
    }
  }
  const __mmask16 m0 = cols >= 16 ? 0xffff : static_cast<__mmask16>((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32   ? 0xffff
                       : cols <= 16 ? 0
                                    : static_cast<__mmask16>((1u << (cols - 16)) - 1);
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    float* cr = c + r * ldc;
    if (accumulate) {
      acc0[r] = _mm512_add_ps(acc0[r], _mm512_maskz_loadu_ps(m0, cr));
      acc1[r] = _mm512_add_ps(acc1[r], _mm512_maskz_loadu_ps(m1, cr + 16));
    }
    _mm512_mask_storeu_ps(cr, m0, acc0[r]);
    _mm512_mask_storeu_ps(cr + 16, m1, acc1[r]);
  }
}

using MicroKernelFn = void (*)(const float*, int64_t, const float*, int, float*, int64_t, int,
                               bool);
constexpr MicroKernelFn kMicroKernels[kGemmMr + 1] = {nullptr,
                                                      GemmMicroKernel<1>,
                                                      GemmMicroKernel<2>,
                                                      GemmMicroKernel<3>,
                                                      GemmMicroKernel<4>,
                                                      GemmMicroKernel<5>,
                                                      GemmMicroKernel<6>,
                                                      GemmMicroKernel<7>,
                                                      GemmMicroKernel<8>,
                                                      GemmMicroKernel<9>,
                                                      GemmMicroKernel<10>,
                                                      GemmMicroKernel<11>,
                                                      GemmMicroKernel<12>};

// Widens rows [n0, n0 + cols) x [k0, k0 + kc) of W into Bp[kc][32],
// zero-padding missing columns.
void PackPanel(const MatMulTarget& t, int64_t n0, int cols, int64_t k0, int kc, float* bp) {
  const size_t esize = DTypeSize(t.w.dtype);
  const char* base = static_cast<const char*>(t.w.data);
  alignas(64) float row[kGemmKc];
  for (int j = 0; j < kGemmNr; ++j) {
    if (j < cols) {
      WidenRow(t.w.dtype, base + ((n0 + j) * t.w.cols + k0) * esize, kc, row);
      for (int k = 0; k < kc; ++k) bp[k * kGemmNr + j] = row[k];
    } else {
      for (int k = 0; k < kc; ++k) bp[k * kGemmNr + j] = 0.0f;
    }
  }
}

// Columns [begin, end) of one target through the packed kernel.
void GemmSlab(const float* x, int64_t m, int64_t ldx, const MatMulTarget& t, int64_t begin,
              int64_t end) {
  const int64_t K = t.w.cols;
  const int64_t panels = (end - begin + kGemmNr - 1) / kGemmNr;
  thread_local std::vector<float> packed;
  packed.resize(static_cast<size_t>(panels) * kGemmKc * kGemmNr);
  for (int64_t k0 = 0; k0 < K; k0 += kGemmKc) {
    const int kc = static_cast<int>(std::min<int64_t>(kGemmKc, K - k0));
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t n0 = begin + p * kGemmNr;
      PackPanel(t, n0, static_cast<int>(std::min<int64_t>(kGemmNr, end - n0)), k0, kc,
                packed.data() + p * kGemmKc * kGemmNr);
    }
    for (int64_t r0 = 0; r0 < m; r0 += kGemmMr) {
      const int mr = static_cast<int>(std::min<int64_t>(kGemmMr, m - r0));
      for (int64_t p = 0; p < panels; ++p) {
        const int64_t n0 = begin + p * kGemmNr;
        kMicroKernels[mr](x + r0 * ldx + k0, ldx, packed.data() + p * kGemmKc * kGemmNr, kc,
                          t.y + r0 * t.ldy + n0, t.ldy,
                          static_cast<int>(std::min<int64_t>(kGemmNr, end - n0)), k0 > 0);
      }
    }
  }
  if (t.bias) {
    for (int64_t r = 0; r < m; ++r)
      for (int64_t n = begin; n < end; ++n) t.y[r * t.ldy + n] += t.bias[n];
  }
}
#else
// Without AVX-512: widen the slab, then OpenBLAS sgemm.
void GemmSlab(const float* x, int64_t m, int64_t ldx, const MatMulTarget& t, int64_t begin,
              int64_t end) {
  thread_local std::vector<float> slab;
  const int64_t K = t.w.cols, nb = end - begin;
  const size_t esize = DTypeSize(t.w.dtype);
  const char* base = static_cast<const char*>(t.w.data);
  slab.resize(static_cast<size_t>(nb * K));
  for (int64_t i = 0; i < nb; ++i)
    WidenRow(t.w.dtype, base + (begin + i) * K * esize, K, slab.data() + i * K);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(nb),
              static_cast<int>(K), 1.0f, x, static_cast<int>(ldx), slab.data(), static_cast<int>(K),
              0.0f, t.y + begin, static_cast<int>(t.ldy));
  if (t.bias) {
    for (int64_t r = 0; r < m; ++r)
      for (int64_t i = 0; i < nb; ++i) t.y[r * t.ldy + begin + i] += t.bias[begin + i];
  }
}
#endif

}  // namespace

void WidenRow(DType dtype, const void* src, int64_t n, float* dst) {
  const auto* u16 = static_cast<const uint16_t*>(src);
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::kBF16: {
      int64_t i = 0;
#ifdef CRESCENT_AVX512
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, Load16<DType::kBF16>(src, i));
#endif
      for (; i < n; ++i) dst[i] = BF16ToFloat(u16[i]);
      return;
    }
    case DType::kF16: {
      int64_t i = 0;
#ifdef CRESCENT_AVX512
      for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, Load16<DType::kF16>(src, i));
#endif
      for (; i < n; ++i) dst[i] = F16ToFloat(u16[i]);
      return;
    }
    default:
      return;
  }
}

void MatMul(ThreadPool& pool, const float* x, int64_t m, int64_t ldx,
            std::span<const MatMulTarget> targets) {
  if (m <= 0 || targets.empty()) return;
  const bool gemv = m <= kGemvMaxRows;
  // Tasks: (target, row range); row ranges of kGemvRowsPerTask (multiple of
  // 4) or of a slab size.
  struct Task {
    int target;
    int64_t begin, end;
  };
  thread_local std::vector<Task> tasks;
  tasks.clear();
  for (size_t ti = 0; ti < targets.size(); ++ti) {
    const MatMulTarget& t = targets[ti];
    int64_t step = kGemvRowsPerTask;
    if (!gemv) step = kGemmSlabColumns;
    for (int64_t b = 0; b < t.w.rows; b += step) {
      tasks.push_back({static_cast<int>(ti), b, std::min(t.w.rows, b + step)});
    }
  }
  const std::vector<Task>& all = tasks;
  pool.ParallelFor(static_cast<int64_t>(all.size()), 1, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const Task& task = all[i];
      if (gemv) {
        GemvRows(x, m, ldx, targets[task.target], task.begin, task.end);
      } else {
        GemmSlab(x, m, ldx, targets[task.target], task.begin, task.end);
      }
    }
  });
}

void MatMulReference(const float* x, int64_t m, int64_t ldx, const MatMulTarget& t) {
  const int64_t K = t.w.cols;
  const size_t esize = DTypeSize(t.w.dtype);
  std::vector<float> row(K);
  for (int64_t n = 0; n < t.w.rows; ++n) {
    WidenRow(t.w.dtype, static_cast<const char*>(t.w.data) + n * K * esize, K, row.data());
    for (int64_t r = 0; r < m; ++r) {
      double acc = t.bias ? t.bias[n] : 0.0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(x[r * ldx + k]) * row[k];
      t.y[r * t.ldy + n] = static_cast<float>(acc);
    }
  }
}

void RmsNorm(const float* x, const float* weight, int64_t n, double eps, float* out) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * inv);
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
#ifdef CRESCENT_AVX512
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    __m512 g = _mm512_loadu_ps(gate + i);
    __m512 e = Exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
    __m512 s = _mm512_div_ps(g, _mm512_add_ps(one, e));
    _mm512_storeu_ps(out + i, _mm512_mul_ps(s, _mm512_loadu_ps(up + i)));
  }
#endif
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void SiluMulReference(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<float>(gate[i] / (1.0 + std::exp(-static_cast<double>(gate[i]))) * up[i]);
  }
}

float Dot(const float* a, const float* b, int64_t n) {
#ifdef CRESCENT_AVX512
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i < n; i += 16) {
    const __mmask16 mask =
        n - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - i)) - 1);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + i), _mm512_maskz_loadu_ps(mask, b + i),
                           acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#else
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
#endif
}

void Axpy(float alpha, const float* x, int64_t n, float* y) {
  int64_t i = 0;
#ifdef CRESCENT_AVX512
  const __m512 a = _mm512_set1_ps(alpha);
  for (; i + 16 <= n; i += 16) {
    _mm512_storeu_ps(y + i, _mm512_fmadd_ps(a, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  }
  if (i < n) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(
        y + i, mask,
        _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(mask, x + i), _mm512_maskz_loadu_ps(mask, y + i)));
  }
  return;
#endif
  for (; i < n; ++i) y[i] += alpha * x[i];
}

float ExpSubtractSum(float* x, int64_t n, float max_value) {
  int64_t i = 0;
  float sum = 0;
#ifdef CRESCENT_AVX512
  __m512 acc = _mm512_setzero_ps();
  const __m512 mv = _mm512_set1_ps(max_value);
  for (; i + 16 <= n; i += 16) {
    __m512 e = Exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv));
    _mm512_storeu_ps(x + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  sum = _mm512_reduce_add_ps(acc);
#endif
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - max_value);
    sum += x[i];
  }
  return sum;
}

}  // namespace crescent::model::cpu
