// Tokenizer: Hugging Face tokenizer.json (byte-level BPE family: Qwen2/2.5/3,
// Llama 3, GPT-2 style) plus tokenizer_config.json, with encodings identical
// to Hugging Face tokenizers.
//
//   ASSIGN_OR_RETURN(auto tok, Tokenizer::Load("/models/Qwen3-8B"));
//   std::vector<int32_t> ids = tok->Encode("Hello world");
//   std::string text = tok->Decode(ids);
//
// Pipeline of Encode (what tokenizer.json configures):
//   1. added tokens (added_tokens[]) are cut out first, leftmost-longest,
//      honouring lstrip/rstrip/single_word; normalized=true ones are matched
//      after normalization;
//   2. the rest is normalized (null or NFC), pre-tokenized (Split regex and/or
//      ByteLevel, see pre_tokenizer.h) and each piece BPE-merged (bpe.h);
//   3. with add_special_tokens the post_processor's TemplateProcessing (or
//      tokenizer_config's add_bos_token) adds BOS/EOS.
// Different models differ only in data (regex, specials, ignore_merges), so
// Llama 3 and Qwen load with the same code.
//
// Thread safety: a loaded Tokenizer is immutable (its word cache locks
// inside); every method may be called from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace crescent {

struct TokenizerOptions {
  // Pre-token words whose BPE result is cached (HF caches 10k). 0 disables
  // the cache (the reference path for benchmarks).
  size_t word_cache_capacity = 1 << 16;
};

class Tokenizer {
 public:
  // Reads <model_dir>/tokenizer.json, <model_dir>/tokenizer_config.json
  // (optional) and <model_dir>/generation_config.json (optional, for extra
  // eos ids). Errors name the file and the field.
  static StatusOr<std::unique_ptr<Tokenizer>> Load(std::string_view model_dir,
                                                   const TokenizerOptions& options = {});

  // Same from the files' contents; `config_json` and `generation_config_json`
  // may be empty.
  static StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view tokenizer_json,
                                                       std::string_view config_json = {},
                                                       std::string_view generation_config_json = {},
                                                       const TokenizerOptions& options = {});

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // ---- encoding and decoding ----

  // Token ids of `text` (UTF-8; invalid bytes are encoded as their bytes).
  // add_special_tokens adds what the post-processor / add_bos_token asks for
  // (BOS for Llama 3, nothing for Qwen), like HF encode(text, add_special_tokens).
  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens = false) const;

  // Text of `ids`; invalid UTF-8 becomes U+FFFD (HF decode semantics). Ids
  // outside the vocabulary are skipped. skip_special_tokens drops tokens
  // marked special in added_tokens.
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // Raw bytes that one id decodes to (possibly a partial UTF-8 character);
  // empty for unknown ids. The view lives as long as the Tokenizer.
  std::string_view TokenBytes(int32_t id) const;

  // ---- vocabulary ----

  // Number of ids (largest id + 1, added tokens included).
  int32_t VocabSize() const;
  // Id of a token spelled as in tokenizer.json ("<|im_end|>", "Ġhello").
  std::optional<int32_t> TokenToId(std::string_view token) const;
  // Spelling of `id` as in tokenizer.json; empty for unknown ids.
  std::string_view IdToToken(int32_t id) const;
  // True for added tokens with "special": true.
  bool IsSpecial(int32_t id) const;
  // Ids of every special added token, ascending.
  const std::vector<int32_t>& SpecialTokenIds() const;

  // ---- tokenizer_config.json ----

  // Ids that end generation: eos_token plus generation_config's
  // eos_token_id (one id or a list), deduplicated, in that order.
  const std::vector<int32_t>& EosTokenIds() const;
  std::optional<int32_t> BosTokenId() const;
  std::optional<int32_t> PadTokenId() const;
  // Token strings as written in tokenizer_config ("" when absent); the chat
  // template sees them as bos_token, eos_token, pad_token, unk_token.
  const std::string& BosToken() const;
  const std::string& EosToken() const;
  const std::string& PadToken() const;
  const std::string& UnkToken() const;
  bool AddBosToken() const;
  // chat_template from tokenizer_config.json (a string, or the entry named
  // "default" of a list of {name, template}); empty when absent.
  const std::string& ChatTemplateSource() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  static StatusOr<std::unique_ptr<Tokenizer>> FromJsonUnchecked(std::string_view tokenizer_json,
                                                                std::string_view config_json,
                                                                std::string_view generation_config_json,
                                                                const TokenizerOptions& options);
  std::unique_ptr<Impl> impl_;
  friend class Detokenizer;
};

}  // namespace crescent
