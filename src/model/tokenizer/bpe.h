// Byte-level BPE model: turns one pre-token (raw bytes) into vocabulary ids
// by applying merges in rank order, exactly as Hugging Face tokenizers'
// BPE::merge_word does (lowest rank first, leftmost first among equals).
//
// Thread safety: const methods may be called from many threads at once; the
// per-word cache is sharded and locked inside.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace crescent::tokenizer {

struct BpeOptions {
  // Llama 3 style: a word that is a vocabulary entry as a whole is emitted
  // as that one id without running merges.
  bool ignore_merges = false;
  // Words up to this many bytes are cached (word -> ids), at most
  // `cache_words` of them; beyond that words are merged every time.
  size_t cache_max_word_bytes = 256;
  size_t cache_words = 1 << 16;
  // Id for a byte that has no vocabulary entry; -1 drops such bytes (as
  // Hugging Face does without an unk_token).
  int32_t unk_id = -1;
};

class BpeModel {
 public:
  // `vocab` maps byte-level token strings to ids; `merges` are pairs of
  // byte-level token strings in rank order. Fails (with the offending merge)
  // when a merge names a token or a merged result missing from the vocab.
  static std::unique_ptr<BpeModel> Create(
      const std::unordered_map<std::string, int32_t>& vocab,
      const std::vector<std::pair<std::string, std::string>>& merges,
      const BpeOptions& options, std::string* error);
  ~BpeModel();

  // Appends the ids of `word` (raw bytes of one pre-token) to `out`.
  void EncodeWord(std::string_view word, std::vector<int32_t>* out) const;

  // Same without the cache (the reference path for tests and benchmarks).
  void EncodeWordUncached(std::string_view word, std::vector<int32_t>* out) const;

 private:
  struct Impl;
  explicit BpeModel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace crescent::tokenizer
