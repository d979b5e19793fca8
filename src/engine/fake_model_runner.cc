#include "engine/fake_model_runner.h"

#include <fmt/format.h>
#include <xxhash.h>

namespace crescent::engine {

FakeModelRunner::FakeModelRunner(const FakeModelOptions& options)
    : options_(options),
      kv_(static_cast<size_t>(options.num_blocks) * options.block_size, 0) {}

uint64_t FakeModelRunner::SlotValue(int32_t token, int32_t position) {
  const int32_t pair[2] = {token, position};
  return XXH3_64bits(pair, sizeof(pair)) | 1;  // never 0 (= unwritten)
}

std::vector<float> FakeModelRunner::LogitsFor(uint64_t digest) const {
  std::vector<float> row(options_.vocab_size);
  for (int v = 0; v < options_.vocab_size; ++v) {
    const uint64_t h = XXH3_64bits_withSeed(&v, sizeof(v), digest);
    const double unit = static_cast<double>(h >> 11) / static_cast<double>(1ULL << 53);
    row[v] = static_cast<float>((2.0 * unit - 1.0) * options_.logit_range);
  }
  return row;
}

std::vector<float> FakeModelRunner::ReferenceLogits(
    std::span<const int32_t> tokens) const {
  uint64_t digest = 0;
  for (size_t p = 0; p < tokens.size(); ++p) {
    const uint64_t v = SlotValue(tokens[p], static_cast<int32_t>(p));
    digest = XXH3_64bits_withSeed(&v, sizeof(v), digest);
  }
  return LogitsFor(digest);
}

std::span<uint64_t> FakeModelRunner::block_slots(int32_t block) {
  return std::span<uint64_t>(kv_).subspan(
      static_cast<size_t>(block) * options_.block_size, options_.block_size);
}

Status FakeModelRunner::Forward(std::span<const ForwardSeq> batch,
                                std::vector<float>* logits) {
  ++forward_calls_;
  logits->clear();
  const int bs = options_.block_size;
  int64_t tokens_this_call = 0;
  for (const ForwardSeq& seq : batch) {
    const size_t end = seq.start_position + seq.tokens.size();
    if (seq.tokens.empty() || seq.block_table.size() * bs < end) {
      return InvalidArgumentError(fmt::format(
          "fake model: block table of {} blocks cannot hold {} positions",
          seq.block_table.size(), end));
    }
    for (size_t i = 0; i < seq.tokens.size(); ++i) {
      const int32_t pos = seq.start_position + static_cast<int32_t>(i);
      const int32_t block = seq.block_table[pos / bs];
      if (block < 0 || block >= options_.num_blocks)
        return InvalidArgumentError(fmt::format("fake model: block id {} out of range", block));
      kv_[static_cast<size_t>(block) * bs + pos % bs] = SlotValue(seq.tokens[i], pos);
    }
    tokens_this_call += static_cast<int64_t>(seq.tokens.size());
    if (!seq.need_logits) continue;
    uint64_t digest = 0;
    for (size_t p = 0; p < end; ++p) {
      const uint64_t v = kv_[static_cast<size_t>(seq.block_table[p / bs]) * bs + p % bs];
      if (v == 0)
        return InternalError(fmt::format("fake model: position {} read before written", p));
      digest = XXH3_64bits_withSeed(&v, sizeof(v), digest);
    }
    std::vector<float> row = LogitsFor(digest);
    logits->insert(logits->end(), row.begin(), row.end());
  }
  tokens_computed_ += tokens_this_call;
  max_tokens_per_call_ = std::max(max_tokens_per_call_, tokens_this_call);
  return OkStatus();
}

}  // namespace crescent::engine
