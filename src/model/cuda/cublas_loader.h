// cuBLAS and cuBLASLt are opened with dlopen on the first cuBLAS call, not
// linked: linking them costs every `crescent` process about 1.3 s and 210 MB
// of memory at start (measured on this project's VM with an empty program
// linked against them), including `crescent master` and the store tools,
// which never touch a GPU. cublas_loader.cc defines the cuBLAS entry points
// the CUDA backend calls; each resolves the library's own on first use and
// returns CUBLAS_STATUS_NOT_INITIALIZED when the library cannot be opened.
//
// Thread safety: everything here may be called from any thread.
#pragma once

#include <string>
#include <vector>

namespace crescent::model::cuda {

// Why cuBLAS or cuBLASLt could not be opened (the loader's messages and what
// to do), or empty when both are open. Opens them if no call did yet.
std::string CublasLoadError();

// The forwarded entry points the opened libraries do not define (a name
// mistyped here, or a cuBLAS too old). Empty when all resolve.
std::vector<std::string> MissingCublasSymbols();

}  // namespace crescent::model::cuda
