// What the engine needs from a model: a batched forward pass over a paged KV
// cache. The model runtime (src/model) satisfies it through an adapter; tests
// use FakeModelRunner (fake_model_runner.h).
//
// Paged KV: the runner owns a pool of num_blocks() blocks of block_size()
// token slots. The engine assigns blocks to sequences (BlockManager) and
// passes each sequence's block table with every forward call; the runner
// writes the KV of the new tokens into the slots their positions map to
// (position p lives in block_table[p / block_size], slot p % block_size) and
// reads earlier positions' KV from the same table.
//
// Thread safety: the engine calls a runner from one thread at a time.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace crescent::engine {

// Drawing a sequence's next token on the device (runners whose
// SupportsDeviceSampling() is true): the request's temperature, top_k,
// top_p and min_p (no penalties), and the one draw of the sequence's
// generator that the host sampler would have consumed. model/backend.h
// (SamplingRequest) states the exact semantics.
struct DeviceSample {
  float temperature = 0.0f;
  int top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  double uniform = 0.0;   // DrawUniform(seq rng); unused when greedy
  bool logprob = false;   // also the token's logprob and rank
};

struct DeviceSampled {
  int32_t token = -1;  // -1: not sampled on the device
  float logprob = 0.0f;
  int32_t rank = 0;
};

// One sequence's share of a forward step.
struct ForwardSeq {
  std::span<const int32_t> tokens;       // new tokens to compute, >= 1
  int32_t start_position = 0;            // position of tokens[0]; KV of
                                         // [0, start_position) is in the cache
  std::span<const int32_t> block_table;  // covers [0, start_position + tokens.size())
  bool need_logits = false;              // logits at the last new token
  // With need_logits, on a runner with device sampling: draw the token on
  // the device (ForwardSampled) instead of returning the logits row.
  const DeviceSample* sample = nullptr;
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;

  virtual int vocab_size() const = 0;
  virtual int block_size() const = 0;  // token slots per KV block
  virtual int num_blocks() const = 0;  // blocks in the KV pool
  // Names the KV lineage: model weights, KV dtype and layout. Seeds the
  // prefix-cache hashes, so KV of another model never matches.
  virtual std::string fingerprint() const = 0;

  // Computes the batch. `logits` receives one row of vocab_size() floats per
  // sequence with need_logits, in batch order ([rows][vocab], row-major).
  virtual Status Forward(std::span<const ForwardSeq> batch,
                         std::vector<float>* logits) = 0;

  // Whether ForwardSampled takes ForwardSeq::sample.
  virtual bool SupportsDeviceSampling() const { return false; }
  // As Forward, but sequences with `sample` get no logits row: their token
  // is in (*sampled)[i] (one entry per batch element, token -1 elsewhere).
  virtual Status ForwardSampled(std::span<const ForwardSeq> batch, std::vector<float>* logits,
                                std::vector<DeviceSampled>* sampled) {
    return UnimplementedError("this model runner has no device sampling");
  }
};

}  // namespace crescent::engine
