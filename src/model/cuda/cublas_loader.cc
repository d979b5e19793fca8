// cuBLAS and cuBLASLt, opened on first use (see cublas_loader.h).
#include "model/cuda/cublas_loader.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <dlfcn.h>

#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace crescent::model::cuda {
namespace {

enum Lib { kCublas, kCublasLt, kLibs };

struct Library {
  const char* soname;
  std::once_flag once;
  void* handle = nullptr;
  std::string error;  // why it could not be opened; set once
};

Library g_libs[kLibs] = {{"libcublas.so." CRESCENT_CUBLAS_MAJOR, {}, nullptr, {}},
                         {"libcublasLt.so." CRESCENT_CUBLAS_MAJOR, {}, nullptr, {}}};

void* Open(Lib which) {
  Library& lib = g_libs[which];
  std::call_once(lib.once, [&lib] {
    // The loader's search path first (LD_LIBRARY_PATH, ld.so.cache), then
    // the toolkit this binary was built against.
    lib.handle = ::dlopen(lib.soname, RTLD_NOW | RTLD_LOCAL);
    if (lib.handle != nullptr) return;
    const std::string first = ::dlerror();
    const std::string fallback = std::string(CRESCENT_CUDA_LIB_DIR) + "/" + lib.soname;
    lib.handle = ::dlopen(fallback.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib.handle == nullptr) {
      lib.error = first + "; " + ::dlerror() +
                  " (install the CUDA toolkit's cuBLAS, or put its directory "
                  "in LD_LIBRARY_PATH)";
    }
  });
  return lib.handle;
}

void* Resolve(Lib which, const char* name) {
  void* handle = Open(which);
  return handle == nullptr ? nullptr : ::dlsym(handle, name);
}

// Every forwarded entry point, for MissingCublasSymbols.
std::vector<std::pair<Lib, const char*>>& Forwarded() {
  static std::vector<std::pair<Lib, const char*>> names;
  return names;
}

struct Register {
  Register(Lib which, const char* name) { Forwarded().emplace_back(which, name); }
};

}  // namespace

std::string CublasLoadError() {
  std::string out;
  for (Lib which : {kCublas, kCublasLt}) {
    Open(which);
    if (!g_libs[which].error.empty()) out += (out.empty() ? "" : "; ") + g_libs[which].error;
  }
  return out;
}

std::vector<std::string> MissingCublasSymbols() {
  std::vector<std::string> missing;
  for (const auto& [which, name] : Forwarded()) {
    if (Resolve(which, name) == nullptr) missing.push_back(name);
  }
  return missing;
}

}  // namespace crescent::model::cuda

using crescent::model::cuda::Register;
using crescent::model::cuda::kCublas;
using crescent::model::cuda::kCublasLt;
using crescent::model::cuda::Resolve;

// Each definition replaces the library's symbol for this binary and calls
// the real one (resolved once). The signatures are the headers' own: a
// mismatch fails to compile against the declarations above.
#define CRESCENT_FORWARD(lib, ret, name, params, args, fail)                     \
  static const Register kRegister_##name(lib, #name);                            \
  ret name params {                                                              \
    static const auto fn = reinterpret_cast<ret(*) params>(Resolve(lib, #name)); \
    if (fn == nullptr) return fail;                                              \
    return fn args;                                                              \
  }

extern "C" {
CRESCENT_FORWARD(kCublas, cublasStatus_t, cublasCreate_v2, (cublasHandle_t* handle), (handle),
                 CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublas, cublasStatus_t, cublasDestroy_v2, (cublasHandle_t handle), (handle),
                 CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublas, cublasStatus_t, cublasGemmEx,
                 (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                  int n, int k, const void* alpha, const void* A, cudaDataType Atype, int lda,
                  const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
                  cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                  cublasGemmAlgo_t algo),
                 (handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C,
                  Ctype, ldc, computeType, algo),
                 CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublas, const char*, cublasGetStatusString, (cublasStatus_t status), (status),
                 "cuBLAS is not loaded")
CRESCENT_FORWARD(kCublas, cublasStatus_t, cublasSetStream_v2,
                 (cublasHandle_t handle, cudaStream_t streamId), (handle, streamId),
                 CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublas, cublasStatus_t, cublasSetWorkspace_v2,
                 (cublasHandle_t handle, void* workspace, size_t workspaceSizeInBytes),
                 (handle, workspace, workspaceSizeInBytes), CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublasLt, cublasStatus_t, cublasLtCreate, (cublasLtHandle_t* lightHandle),
                 (lightHandle), CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublasLt, cublasStatus_t, cublasLtDestroy, (cublasLtHandle_t lightHandle),
                 (lightHandle), CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublasLt, cublasStatus_t, cublasLtMatmul,
                 (cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t computeDesc, const void* alpha,
                  const void* A, cublasLtMatrixLayout_t Adesc, const void* B,
                  cublasLtMatrixLayout_t Bdesc, const void* beta, const void* C,
                  cublasLtMatrixLayout_t Cdesc, void* D, cublasLtMatrixLayout_t Ddesc,
                  const cublasLtMatmulAlgo_t* algo, void* workspace, size_t workspaceSizeInBytes,
                  cudaStream_t stream),
                 (lightHandle, computeDesc, alpha, A, Adesc, B, Bdesc, beta, C, Cdesc, D, Ddesc,
                  algo, workspace, workspaceSizeInBytes, stream),
                 CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublasLt, cublasStatus_t, cublasLtMatmulAlgoCheck,
                 (cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc,
                  cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                  cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                  const cublasLtMatmulAlgo_t* algo, cublasLtMatmulHeuristicResult_t* result),
                 (lightHandle, operationDesc, Adesc, Bdesc, Cdesc, Ddesc, algo, result),
                 CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublasLt, cublasStatus_t, cublasLtMatmulAlgoGetHeuristic,
                 (cublasLtHandle_t lightHandle, cublasLtMatmulDesc_t operationDesc,
                  cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
                  cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc,
                  cublasLtMatmulPreference_t preference, int requestedAlgoCount,
                  cublasLtMatmulHeuristicResult_t heuristicResultsArray[], int* returnAlgoCount),
                 (lightHandle, operationDesc, Adesc, Bdesc, Cdesc, Ddesc, preference,
                  requestedAlgoCount, heuristicResultsArray, returnAlgoCount),
                 CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublasLt, cublasStatus_t, cublasLtMatmulDescCreate,
                 (cublasLtMatmulDesc_t* matmulDesc, cublasComputeType_t computeType,
                  cudaDataType_t scaleType),
                 (matmulDesc, computeType, scaleType), CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublasLt, cublasStatus_t, cublasLtMatmulDescDestroy,
                 (cublasLtMatmulDesc_t matmulDesc), (matmulDesc), CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublasLt, cublasStatus_t, cublasLtMatmulDescSetAttribute,
                 (cublasLtMatmulDesc_t matmulDesc, cublasLtMatmulDescAttributes_t attr,
                  const void* buf, size_t sizeInBytes),
                 (matmulDesc, attr, buf, sizeInBytes), CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublasLt, cublasStatus_t, cublasLtMatmulPreferenceCreate,
                 (cublasLtMatmulPreference_t* pref), (pref), CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublasLt, cublasStatus_t, cublasLtMatmulPreferenceDestroy,
                 (cublasLtMatmulPreference_t pref), (pref), CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublasLt, cublasStatus_t, cublasLtMatmulPreferenceSetAttribute,
                 (cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr,
                  const void* buf, size_t sizeInBytes),
                 (pref, attr, buf, sizeInBytes), CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublasLt, cublasStatus_t, cublasLtMatrixLayoutCreate,
                 (cublasLtMatrixLayout_t* matLayout, cudaDataType type, uint64_t rows,
                  uint64_t cols, int64_t ld),
                 (matLayout, type, rows, cols, ld), CUBLAS_STATUS_NOT_INITIALIZED)
CRESCENT_FORWARD(kCublasLt, cublasStatus_t, cublasLtMatrixLayoutDestroy,
                 (cublasLtMatrixLayout_t matLayout), (matLayout), CUBLAS_STATUS_NOT_INITIALIZED)
}  // extern "C"
