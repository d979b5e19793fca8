// CUDA and cuBLAS errors as Status values: the one place where the CUDA
// backend translates them (STYLE.md: "errors are values").
//
//   RETURN_IF_CUDA_ERROR(cudaMalloc(&p, n), "allocate the KV pool");
//   RETURN_IF_CUBLAS_ERROR(cublasGemmEx(...), "q/k/v projection");
//
// Internal to src/model/cuda; never included by code outside the backend.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#include "common/status.h"

namespace crescent::model::cuda {

// Out-of-memory maps to RESOURCE_EXHAUSTED (the caller can shrink the pool),
// a missing device or driver to UNAVAILABLE, the rest to INTERNAL; the
// message names what was being done and CUDA's own words.
Status CudaStatus(cudaError_t err, const std::string& what);
Status CublasStatus(cublasStatus_t err, const std::string& what);

}  // namespace crescent::model::cuda

#define RETURN_IF_CUDA_ERROR(expr, what)                                      \
  do {                                                                        \
    const cudaError_t _cuda_err = (expr);                                     \
    if (_cuda_err != cudaSuccess)                                             \
      return ::crescent::model::cuda::CudaStatus(_cuda_err, (what));          \
  } while (0)

#define RETURN_IF_CUBLAS_ERROR(expr, what)                                    \
  do {                                                                        \
    const cublasStatus_t _cublas_err = (expr);                                \
    if (_cublas_err != CUBLAS_STATUS_SUCCESS)                                 \
      return ::crescent::model::cuda::CublasStatus(_cublas_err, (what));      \
  } while (0)
