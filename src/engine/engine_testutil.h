// Helpers for engine tests: drive an EngineCore to completion and collect
// what each request produced.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "engine/engine_core.h"
#include "engine/fake_model_runner.h"
#include "engine/kv_connector.h"

namespace crescent::engine::testing {

struct Collected {
  std::map<int, std::vector<int32_t>> tokens;  // by sequence index
  std::map<int, std::string> text;
  std::map<int, FinishReason> finish;
  std::map<int, StopReason> stop_reason;
  std::map<int, std::vector<TokenLogprobs>> logprobs;
  int num_cached_tokens = 0;
  bool request_finished = false;
  int deltas = 0;
};

inline void Accumulate(std::map<std::string, Collected>* results,
                       std::vector<RequestOutput>& outputs) {
  for (RequestOutput& out : outputs) {
    Collected& c = (*results)[out.request_id];
    auto& toks = c.tokens[out.index];
    toks.insert(toks.end(), out.new_tokens.begin(), out.new_tokens.end());
    c.text[out.index] += out.text;
    auto& lps = c.logprobs[out.index];
    lps.insert(lps.end(), out.logprobs.begin(), out.logprobs.end());
    if (out.finish) {
      EXPECT_FALSE(c.finish.count(out.index)) << "two final deltas for " << out.request_id;
      c.finish[out.index] = *out.finish;
      c.stop_reason[out.index] = out.stop_reason;
    }
    EXPECT_FALSE(c.request_finished) << "delta after request_finished for " << out.request_id;
    c.request_finished |= out.request_finished;
    c.num_cached_tokens = out.num_cached_tokens;
    ++c.deltas;
  }
}

// Steps `core` until no request is unfinished; checks block-manager
// invariants after every step.
inline std::map<std::string, Collected> RunToCompletion(EngineCore& core, int max_steps = 100000) {
  std::map<std::string, Collected> results;
  for (int step = 0; step < max_steps && core.HasUnfinishedRequests(); ++step) {
    auto outputs = core.Step();
    Accumulate(&results, outputs);
    Status st = core.block_manager().CheckInvariants();
    EXPECT_TRUE(st.ok()) << st.ToString();
    if (!st.ok()) break;
  }
  EXPECT_FALSE(core.HasUnfinishedRequests()) << "requests still unfinished";
  return results;
}

// Greedy continuation computed without any cache.
inline std::vector<int32_t> ReferenceGreedy(const FakeModelRunner& model,
                                            std::vector<int32_t> tokens, int n) {
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    auto logits = model.ReferenceLogits(tokens);
    const int32_t t = Argmax(logits);
    out.push_back(t);
    tokens.push_back(t);
  }
  return out;
}

inline std::vector<int32_t> Prompt(int len, int32_t seed, int vocab = 64) {
  std::vector<int32_t> p;
  uint32_t x = static_cast<uint32_t>(seed) * 2654435761u + 1;
  for (int i = 0; i < len; ++i) {
    x = x * 1103515245u + 12345u;
    p.push_back(static_cast<int32_t>((x >> 8) % vocab));
  }
  return p;
}

inline EngineRequest Greedy(std::string id, std::vector<int32_t> prompt, int max_tokens) {
  EngineRequest r;
  r.request_id = std::move(id);
  r.prompt = std::move(prompt);
  r.params.temperature = 0;
  r.params.max_tokens = max_tokens;
  return r;
}

// A connector over a shared "store": a map from block hash to a block's slot
// values in the fake model's KV cache. OnPrefillDone saves, LoadKv copies
// back into the engine's blocks; `fail` injects a load failure.
using FakeStore = std::map<BlockHash, std::vector<uint64_t>>;

class MapConnector : public KvConnector {
 public:
  MapConnector(FakeModelRunner* model, FakeStore* store) : model_(model), store_(store) {}
  int MatchTokens(const KvSequenceView& seq, int num_local_tokens) override {
    int blocks = 0;
    while (blocks < static_cast<int>(seq.block_hashes.size()) &&
           store_->count(seq.block_hashes[blocks]))
      ++blocks;
    return std::max(0, blocks * model_->block_size() - num_local_tokens);
  }
  Status LoadKv(const KvSequenceView& seq, int begin, int end,
                std::span<const BlockId> blocks) override {
    if (fail) return UnavailableError("store unreachable (injected)");
    const int bs = model_->block_size();
    EXPECT_EQ(static_cast<int>(blocks.size()), (end - begin) / bs);
    CopyIn({seq.block_hashes.begin() + begin / bs, blocks.size()}, blocks);
    loaded += end - begin;
    return OkStatus();
  }
  void OnPrefillDone(const KvSequenceView& seq, std::span<const BlockId> blocks) override {
    ++prefills;
    EXPECT_EQ(blocks.size(), seq.block_hashes.size());
    EXPECT_EQ(static_cast<int>(seq.tokens.size()), seq.num_prompt_tokens);
    for (size_t i = 0; i < blocks.size(); ++i) {
      auto slots = model_->block_slots(blocks[i]);
      (*store_)[seq.block_hashes[i]] = std::vector<uint64_t>(slots.begin(), slots.end());
    }
  }
  bool fail = false;
  int loaded = 0;
  int prefills = 0;

 protected:
  // Copies the stored blocks named `hashes` into the engine's `blocks`.
  void CopyIn(std::span<const BlockHash> hashes, std::span<const BlockId> blocks) {
    for (size_t i = 0; i < blocks.size(); ++i) {
      const auto& src = store_->at(hashes[i]);
      auto dst = model_->block_slots(blocks[i]);
      std::copy(src.begin(), src.end(), dst.begin());
    }
  }
  FakeModelRunner* model_;
  FakeStore* store_;
};

}  // namespace crescent::engine::testing
