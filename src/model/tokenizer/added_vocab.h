// Added tokens (tokenizer.json "added_tokens"): strings that are cut out of
// the text before normalization and BPE and map to one id each, with Hugging
// Face's matching rules: leftmost-longest, `single_word` (only between
// non-word characters), `lstrip`/`rstrip` (swallow Unicode whitespace to the
// left/right), `normalized` (matched in the normalized text instead of the
// raw text).
//
// Thread safety: immutable after construction.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace crescent::tokenizer {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// One piece of a split: either an added token's id or a span of plain text.
struct AddedSplit {
  int32_t id;     // -1 for plain text
  size_t begin;   // byte offsets into the text that was split
  size_t end;
};

// Matches one group of added tokens (the normalized or the raw ones).
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);

  bool empty() const { return tokens_.empty(); }

  // Splits `text` into plain spans and token matches, in order, covering
  // `text` (lstrip/rstrip whitespace belongs to the token's span).
  void Split(std::string_view text, std::vector<AddedSplit>* out) const;

 private:
  // Index into tokens_ of the longest token starting at text[pos], or -1.
  int LongestAt(std::string_view text, size_t pos) const;

  std::vector<AddedToken> tokens_;
  std::unordered_map<std::string_view, int> by_content_;  // views into tokens_
  std::vector<size_t> lengths_;                           // distinct lengths, descending
  bool first_byte_[256] = {};                             // some token starts with this byte
};

// Unicode White_Space (what Rust's char::is_whitespace tests).
bool IsUnicodeWhitespace(char32_t c);

}  // namespace crescent::tokenizer
