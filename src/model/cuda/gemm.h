// The prefill-size projections of the CUDA backend: y[T][N] = x[T][K] *
// w[N][K]^T on cuBLASLt, bf16 operands, float32 accumulation, with the
// output stored as float32, added to a float32 y (the residual stream:
// the residual add happens in the GEMM's epilogue) or stored as bf16 (half
// the bytes for the element-wise kernel that reads it next).
//
// Why not cublasGemmEx: its one heuristic choice is shape-blind to what
// surrounds the GEMM (Qwen3-0.6B's down_proj, K = 3,072 onto N = 1,024,
// runs split-K with a separate reduction), and it cannot store bf16 with a
// float32 residual in the same call. Here the first call of each shape
// with at least kTuneMinRows rows times cuBLASLt's top candidates on the
// real buffers and keeps the fastest (a few milliseconds once per shape);
// smaller shapes take the heuristic's first choice.
//
// Internal to src/model/cuda. Not thread-safe: one GemmRunner per stream,
// used by the one Forward in flight.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "common/status.h"
#include "model/cuda/kernels.h"

namespace crescent::model::cuda {

enum class GemmOut : uint8_t {
  kF32,     // y: float [T][N] = x w^T
  kF32Add,  // y: float [T][N] += x w^T
  kBf16,    // y: bf16 [T][N] = bf16(x w^T)
};

class GemmRunner {
 public:
  GemmRunner() = default;
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // `workspace` (device, `workspace_bytes`) stays owned by the caller and
  // must outlive the runner; work is enqueued on `stream`.
  Status Init(cudaStream_t stream, void* workspace, size_t workspace_bytes);

  // Enqueues y = x w^T per `out`. `tune_scratch` (float [T][N], or null)
  // takes the trial outputs of a kF32Add shape while it is being tuned so
  // that y is added to once; without it such a shape keeps the heuristic's
  // choice. Never tunes while the stream is being captured into a graph.
  Status Run(const bf16_t* x, int64_t T, int64_t K, const bf16_t* w, int64_t N, void* y,
             GemmOut out, float* tune_scratch, const char* what);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool tuned = false;  // algo timed fastest on this shape (bucket-mates reuse it)
  };
  using Key = std::tuple<int64_t, int64_t, int64_t, GemmOut>;  // T, K, N, out
  Status MakePlan(const Key& key, const bf16_t* x, const bf16_t* w, void* y, float* tune_scratch,
                  Plan* plan);
  cublasStatus_t Launch(const Plan& p, const cublasLtMatmulAlgo_t& algo, const bf16_t* x,
                        const bf16_t* w, void* y, bool add);
  static void Destroy(Plan& p);

  cublasLtHandle_t lt_ = nullptr;
  cudaStream_t stream_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Plan> plans_;
};

}  // namespace crescent::model::cuda
