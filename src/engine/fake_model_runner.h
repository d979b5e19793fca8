// A small deterministic model for engine tests: no weights, but a real paged
// KV cache that it writes and reads through the block tables it is given.
//
// The "KV" of a token is a 64-bit mix of (token id, position). The logits at
// a position are a pseudo-random function of the KV of every position up to
// it, read back from the cache through the block table; so the greedy
// continuation depends on the whole prefix, and any bookkeeping error (a
// wrong block table, a block reused while shared, a prefix-cache hit on the
// wrong content, a slot never written) changes the output or fails the call.
//
// Thread safety: none (the engine calls it from one thread).
#pragma once

#include <atomic>
#include <memory>

#include "engine/model_runner.h"

namespace crescent::engine {

struct FakeModelOptions {
  int vocab_size = 64;
  int block_size = 4;
  int num_blocks = 64;
  std::string fingerprint = "fake-model";
  // Logits are drawn in [-logit_range, logit_range].
  float logit_range = 4.0f;
};

class FakeModelRunner : public ModelRunner {
 public:
  explicit FakeModelRunner(const FakeModelOptions& options);

  int vocab_size() const override { return options_.vocab_size; }
  int block_size() const override { return options_.block_size; }
  int num_blocks() const override { return options_.num_blocks; }
  std::string fingerprint() const override { return options_.fingerprint; }
  Status Forward(std::span<const ForwardSeq> batch,
                 std::vector<float>* logits) override;

  // The logits after `tokens` computed without any cache: the reference a
  // paged run must match.
  std::vector<float> ReferenceLogits(std::span<const int32_t> tokens) const;

  // Direct access to a block's slots, for a test KV connector that "loads"
  // blocks from elsewhere. [block_size] values.
  std::span<uint64_t> block_slots(int32_t block);

  // Counters for tests: forward calls and tokens computed so far.
  int64_t forward_calls() const { return forward_calls_; }
  int64_t tokens_computed() const { return tokens_computed_; }
  // The largest batch (in tokens) one call computed.
  int64_t max_tokens_per_call() const { return max_tokens_per_call_; }

  // Deterministic logits for a context digest; public for tests.
  std::vector<float> LogitsFor(uint64_t digest) const;
  static uint64_t SlotValue(int32_t token, int32_t position);

 private:
  FakeModelOptions options_;
  std::vector<uint64_t> kv_;  // [num_blocks * block_size]; 0 = never written
  int64_t forward_calls_ = 0;
  int64_t tokens_computed_ = 0;
  int64_t max_tokens_per_call_ = 0;
};

}  // namespace crescent::engine
