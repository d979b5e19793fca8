// Normalizer and pre-tokenizer stages of the Hugging Face pipeline, for the
// types byte-level BPE tokenizers use:
//   normalizer:     null, NFC (utf8proc), Sequence of those
//   pre_tokenizer:  Split{Regex, behavior Isolated|Removed}, ByteLevel
//                   (use_regex -> the GPT-2 regex, add_prefix_space),
//                   Sequence of those
// Regexes run on PCRE2 with JIT and Unicode properties (\p{L}, \s as Unicode
// White_Space) and tolerate invalid UTF-8: invalid bytes never match a class
// and end up in pieces of their own.
//
// Thread safety: immutable after construction; Split may be called from many
// threads at once.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace crescent::tokenizer {

class Normalizer {
 public:
  // `spec` is tokenizer.json's "normalizer" value (null allowed).
  static StatusOr<std::unique_ptr<Normalizer>> Create(const nlohmann::json& spec);
  virtual ~Normalizer() = default;
  // Returns the normalized text. Invalid UTF-8 is passed through unchanged.
  virtual std::string Normalize(std::string_view text) const = 0;
  // True when Normalize is the identity (no normalizer configured).
  virtual bool IsIdentity() const { return false; }
};

class PreTokenizer {
 public:
  // `spec` is tokenizer.json's "pre_tokenizer" value (null allowed).
  static StatusOr<std::unique_ptr<PreTokenizer>> Create(const nlohmann::json& spec);
  virtual ~PreTokenizer() = default;
  // Splits `text` into pieces (raw bytes, before the byte-level mapping) and
  // appends them to `pieces`. A piece is a view into `text` or into a string
  // added to `*storage` (when a stage builds new text, e.g. a prefix space);
  // both must outlive the pieces.
  virtual void Split(std::string_view text, std::deque<std::string>* storage,
                     std::vector<std::string_view>* pieces) const = 0;
};

}  // namespace crescent::tokenizer
