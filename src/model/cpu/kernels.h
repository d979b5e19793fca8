// CPU compute kernels of the forward pass (float32 math; weights F32, F16
// or BF16 widened to float32 inside the kernels, never activations
// narrowed).
//
// MatMul picks per call:
//  - few rows (decode, small batches): a fused GEMV that streams each
//    weight row once, widening 16 elements at a time and multiplying them
//    against up to 4 activation rows in registers (AVX-512). Bandwidth
//    bound: this is what decode speed rests on.
//  - many rows (prefill): weights widened to float32 in slabs that fit L2
//    and multiplied with OpenBLAS sgemm (one slab per task; OpenBLAS runs
//    single-threaded inside our pool).
// The *Reference functions are plain scalar loops, the yardstick for tests.
//
// Thread safety: stateless except per-thread scratch; MatMul parallelises
// over `pool`.
#pragma once

#include <cstdint>
#include <span>

#include "model/cpu/thread_pool.h"
#include "model/safetensors.h"

namespace crescent::model::cpu {

// A row-major weight matrix [rows = out features][cols = in features].
struct WeightMatrix {
  DType dtype = DType::kBF16;  // kF32, kF16 or kBF16
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
};

// y[m][n] = bias[n] + sum_k x[m][k] * w[n][k]  for m < M, n < w.rows.
struct MatMulTarget {
  WeightMatrix w;
  float* y = nullptr;           // [M][ldy]
  int64_t ldy = 0;              // floats between rows of y
  const float* bias = nullptr;  // [w.rows] or null
};

// All targets share x [M][ldx] (x has w.cols columns) and run in one
// parallel region (q/k/v and gate/up go together).
void MatMul(ThreadPool& pool, const float* x, int64_t m, int64_t ldx,
            std::span<const MatMulTarget> targets);
void MatMulReference(const float* x, int64_t m, int64_t ldx, const MatMulTarget& target);

// Rows at or below this go to the GEMV path (exposed for tests).
inline constexpr int64_t kGemvMaxRows = 16;

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i], n elements.
void RmsNorm(const float* x, const float* weight, int64_t n, double eps, float* out);

// out[i] = silu(gate[i]) * up[i] = gate / (1 + exp(-gate)) * up.
void SiluMul(const float* gate, const float* up, int64_t n, float* out);
void SiluMulReference(const float* gate, const float* up, int64_t n, float* out);

// sum_i a[i] * b[i]
float Dot(const float* a, const float* b, int64_t n);
// y[i] += alpha * x[i]
void Axpy(float alpha, const float* x, int64_t n, float* y);
// x[i] = exp(x[i] - max_value); returns the sum. Vectorised exp (~1 ulp).
float ExpSubtractSum(float* x, int64_t n, float max_value);

// Widens n elements of a weight row to float32.
void WidenRow(DType dtype, const void* src, int64_t n, float* dst);

}  // namespace crescent::model::cpu
