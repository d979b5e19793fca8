// The CUDA backend: bf16 weights and a bf16 paged KV pool in device
// memory, cuBLAS for the projections, own kernels for the rest (kernels.h).
// Reached through LoadModel(dir, {.backend = "cuda"}) (backend.h).
//
// Numerics: GEMM inputs bf16, accumulation and the residual stream float32,
// softmax float32; K/V stored as bf16 (KvDtype::kBFloat16, wire tag
// kv1-bf16-...). Logits come back float32 as the Backend contract says.
//
// Memory: weights, then activation scratch for
// BackendOptions::max_num_batched_tokens tokens (grown on demand), then the
// KV pool: num_kv_blocks, else gpu_memory_utilization of total device memory
// less what is in use after weights and scratch (vLLM's rule), else
// kv_cache_bytes.
//
// KV transfer: ReadKvBlocks/WriteKvBlocks copy each block (contiguous on the
// device, in the wire layout) straight to/from the caller's buffer when that
// buffer is page-locked (RegisterHostBuffer, cudaHostRegister,
// cudaMallocHost), else through a double-buffered pinned staging area; they
// run on their own stream and a mutex serialises them (docs/kv_layout.md).
//
// A batch of one decode token runs the persistent decode step
// (decode_step.h: one cooperative launch for the whole step;
// CRESCENT_CUDA_DECODE_STEP=0 turns it off, CRESCENT_STEP_TRACE=1 or
// =events times it). Other decode-only batches of up to 8 tokens run a
// fused path (GEMVs with the norms, SwiGLU and residual adds folded in)
// replayed from CUDA graphs, one per batch shape, captured the second time
// a shape runs (BackendOptions::cuda_graphs). CRESCENT_PROFILE=1 (or
// =decode) prints the device time per stage at exit, graphs and the
// persistent step off.
//
// Sampling: SupportsDeviceSampling() is true; a SequenceInput::sample is
// drawn on the device (sampler.cu) and only its token id (and logprob)
// crosses PCIe instead of a vocabulary-wide float32 row.
#pragma once

#include <memory>
#include <string_view>

#include "model/backend.h"
#include "model/safetensors.h"

namespace crescent::model::cuda {

// True when a CUDA device can be used by this process (driver present, at
// least one device). Cheap after the first call.
bool DeviceAvailable();

// Takes ownership of the mapped checkpoint (read once at load, released
// after upload); `config_text` is config.json as read (fingerprint).
StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(std::unique_ptr<Checkpoint> checkpoint,
                                                     const ModelConfig& config,
                                                     std::string_view config_text,
                                                     const BackendOptions& options);

}  // namespace crescent::model::cuda
