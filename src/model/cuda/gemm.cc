#include "model/cuda/gemm.h"

#include <algorithm>
#include <string>

#include "common/logging.h"
#include "model/cuda/cuda_util.h"

namespace crescent::model::cuda {
namespace {

// Shapes with fewer rows take the heuristic's first choice: tuning costs
// more than it could save there.
constexpr int64_t kTuneMinRows = 256;
// Candidates timed per tuned shape, and timed launches per candidate.
constexpr int kCandidates = 8;
constexpr int kTimedRuns = 3;
// Plans are per exact row count (serving sees many); dropped when this many.
constexpr size_t kMaxPlans = 1024;

// Row counts share a tuned algorithm within a power-of-two bucket.
int64_t Bucket(int64_t T) {
  int64_t b = kTuneMinRows;
  while (b < T) b *= 2;
  return b;
}

}  // namespace

GemmRunner::~GemmRunner() {
  for (auto& [key, plan] : plans_) Destroy(plan);
  if (lt_) cublasLtDestroy(lt_);
}

void GemmRunner::Destroy(Plan& p) {
  if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  if (p.a) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b) cublasLtMatrixLayoutDestroy(p.b);
  if (p.c) cublasLtMatrixLayoutDestroy(p.c);
  p = Plan{};
}

Status GemmRunner::Init(cudaStream_t stream, void* workspace, size_t workspace_bytes) {
  stream_ = stream;
  workspace_ = workspace;
  workspace_bytes_ = workspace_bytes;
  RETURN_IF_CUBLAS_ERROR(cublasLtCreate(&lt_), "create a cuBLASLt handle");
  return OkStatus();
}

cublasStatus_t GemmRunner::Launch(const Plan& p, const cublasLtMatmulAlgo_t& algo,
                                  const bf16_t* x, const bf16_t* w, void* y, bool add) {
  const float one = 1.f, zero = 0.f;
  return cublasLtMatmul(lt_, p.desc, &one, w, p.a, x, p.b, add ? &one : &zero, y, p.c, y, p.c,
                        &algo, workspace_, workspace_bytes_, stream_);
}

Status GemmRunner::MakePlan(const Key& key, const bf16_t* x, const bf16_t* w, void* y,
                            float* tune_scratch, Plan* plan) {
  const auto [T, K, N, out] = key;
  // Row-major y = x w^T is column-major y^T = w x^T: w (stored [N][K]) is
  // op(A) = A^T of a K x N column-major matrix, x^T is K x T, y^T is N x T.
  Plan p;
  auto fail = [&](cublasStatus_t err, const char* what) {
    Destroy(p);
    return CublasStatus(err, what);
  };
  cublasStatus_t err = cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  if (err != CUBLAS_STATUS_SUCCESS) return fail(err, "create a matmul descriptor");
  const cublasOperation_t op_t = CUBLAS_OP_T;
  cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t));
  const cudaDataType_t out_type = out == GemmOut::kBf16 ? CUDA_R_16BF : CUDA_R_32F;
  if ((err = cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, K, N, K)) != CUBLAS_STATUS_SUCCESS ||
      (err = cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, K, T, K)) != CUBLAS_STATUS_SUCCESS ||
      (err = cublasLtMatrixLayoutCreate(&p.c, out_type, N, T, N)) != CUBLAS_STATUS_SUCCESS) {
    return fail(err, "create matrix layouts");
  }
  cublasLtMatmulPreference_t pref = nullptr;
  if ((err = cublasLtMatmulPreferenceCreate(&pref)) != CUBLAS_STATUS_SUCCESS) {
    return fail(err, "create a matmul preference");
  }
  const uint64_t ws = workspace_bytes_;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  cublasLtMatmulHeuristicResult_t found[kCandidates];
  int returned = 0;
  err = cublasLtMatmulAlgoGetHeuristic(lt_, p.desc, p.a, p.b, p.c, p.c, pref, kCandidates, found,
                                       &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  if (err != CUBLAS_STATUS_SUCCESS || returned == 0) {
    return fail(err == CUBLAS_STATUS_SUCCESS ? CUBLAS_STATUS_NOT_SUPPORTED : err,
                "find a matmul algorithm");
  }
  p.algo = found[0].algo;

  const bool add = out == GemmOut::kF32Add;
  if (T < kTuneMinRows || returned == 1) {
    *plan = p;
    return OkStatus();
  }
  // A row count of the same bucket was tuned: reuse its choice if it fits.
  for (auto it = plans_.lower_bound(Key{Bucket(T) / 2 + 1, 0, 0, GemmOut::kF32});
       it != plans_.end() && std::get<0>(it->first) <= Bucket(T); ++it) {
    if (!it->second.tuned || std::get<1>(it->first) != K || std::get<2>(it->first) != N ||
        std::get<3>(it->first) != out) {
      continue;
    }
    cublasLtMatmulHeuristicResult_t check;
    if (cublasLtMatmulAlgoCheck(lt_, p.desc, p.a, p.b, p.c, p.c, &it->second.algo, &check) ==
            CUBLAS_STATUS_SUCCESS &&
        check.workspaceSize <= workspace_bytes_) {
      p.algo = it->second.algo;
      *plan = p;
      return OkStatus();
    }
  }
  void* trial = add ? static_cast<void*>(tune_scratch) : y;
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream_, &capturing) != cudaSuccess ||
      capturing != cudaStreamCaptureStatusNone || trial == nullptr) {
    *plan = p;
    return OkStatus();
  }
  cudaEvent_t ev[2] = {nullptr, nullptr};
  if (cudaEventCreate(&ev[0]) != cudaSuccess || cudaEventCreate(&ev[1]) != cudaSuccess) {
    if (ev[0]) cudaEventDestroy(ev[0]);
    return fail(CUBLAS_STATUS_ALLOC_FAILED, "create timing events");
  }
  float best = 0.f;
  int best_i = -1;
  for (int i = 0; i < returned; ++i) {
    if (found[i].state != CUBLAS_STATUS_SUCCESS) continue;
    if (Launch(p, found[i].algo, x, w, trial, add) != CUBLAS_STATUS_SUCCESS) continue;  // warm-up
    float ms[kTimedRuns];
    for (float& t : ms) {
      cudaEventRecord(ev[0], stream_);
      Launch(p, found[i].algo, x, w, trial, add);
      cudaEventRecord(ev[1], stream_);
      cudaEventSynchronize(ev[1]);
      cudaEventElapsedTime(&t, ev[0], ev[1]);
    }
    std::sort(ms, ms + kTimedRuns);
    if (best_i < 0 || ms[kTimedRuns / 2] < best) {
      best = ms[kTimedRuns / 2];
      best_i = i;
    }
  }
  cudaEventDestroy(ev[0]);
  cudaEventDestroy(ev[1]);
  if (cudaGetLastError() != cudaSuccess || best_i < 0) {
    return fail(CUBLAS_STATUS_EXECUTION_FAILED, "time matmul algorithms");
  }
  p.algo = found[best_i].algo;
  p.tuned = true;
  spdlog::debug("cuda backend: GEMM {}x{}x{} (out {}): candidate {} of {}, {:.1f} us", T, N, K,
                static_cast<int>(out), best_i, returned, best * 1e3);
  *plan = p;
  return OkStatus();
}

Status GemmRunner::Run(const bf16_t* x, int64_t T, int64_t K, const bf16_t* w, int64_t N, void* y,
                       GemmOut out, float* tune_scratch, const char* what) {
  const Key key{T, K, N, out};
  auto it = plans_.find(key);
  if (it == plans_.end()) {
    if (plans_.size() >= kMaxPlans) {
      for (auto& [k, plan] : plans_) Destroy(plan);
      plans_.clear();
    }
    Plan plan;
    Status made = MakePlan(key, x, w, y, tune_scratch, &plan);
    if (!made.ok()) {
      return Status(made.code(), std::string(what) + ": " + made.message());
    }
    it = plans_.emplace(key, plan).first;
  }
  RETURN_IF_CUBLAS_ERROR(Launch(it->second, it->second.algo, x, w, y, out == GemmOut::kF32Add),
                         what);
  return OkStatus();
}

}  // namespace crescent::model::cuda
