#include "model/tokenizer/added_vocab.h"

#include <utf8proc.h>

#include <algorithm>

#include "model/tokenizer/utf8.h"

namespace crescent::tokenizer {
namespace {

// Rust's char::is_alphanumeric, which HF's single_word check uses.
bool IsAlphanumeric(char32_t c) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

// Start offset of the last code point of text[0, end).
size_t PrevCharStart(std::string_view text, size_t end) {
  size_t p = end - 1;
  for (int k = 0; k < 3 && p > 0 && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80; ++k) --p;
  return p;
}

char32_t PrevChar(std::string_view text, size_t end, size_t* start) {
  *start = PrevCharStart(text, end);
  size_t pos = *start;
  const char32_t c = NextCodePoint(text, &pos);
  return pos == end ? c : 0xFFFD;
}

}  // namespace

bool IsUnicodeWhitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const std::string& c = tokens_[i].content;
    if (c.empty()) continue;
    by_content_.emplace(std::string_view(c), static_cast<int>(i));  // first one wins
    first_byte_[static_cast<unsigned char>(c[0])] = true;
    lengths_.push_back(c.size());
  }
  std::sort(lengths_.begin(), lengths_.end(), std::greater<>());
  lengths_.erase(std::unique(lengths_.begin(), lengths_.end()), lengths_.end());
}

int AddedTokenMatcher::LongestAt(std::string_view text, size_t pos) const {
  if (!first_byte_[static_cast<unsigned char>(text[pos])]) return -1;
  for (size_t len : lengths_) {
    if (len > text.size() - pos) continue;
    auto it = by_content_.find(text.substr(pos, len));
    if (it != by_content_.end()) return it->second;
  }
  return -1;
}

void AddedTokenMatcher::Split(std::string_view text, std::vector<AddedSplit>* out) const {
  size_t start_offset = 0;
  for (size_t pos = 0; pos < text.size() && !tokens_.empty();) {
    const int idx = LongestAt(text, pos);
    if (idx < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = tokens_[idx];
    size_t start = pos, stop = pos + tok.content.size();
    pos = stop;  // matching resumes after the match (not after stripped space), as in HF
    if (start < start_offset) continue;
    if (tok.single_word) {
      size_t unused;
      const bool word_before = start > 0 && IsAlphanumeric(PrevChar(text, start, &unused));
      size_t after = stop;
      const bool word_after = stop < text.size() && IsAlphanumeric(NextCodePoint(text, &after));
      if (word_before || word_after) continue;
    }
    if (tok.lstrip) {
      size_t s = start;
      while (s > start_offset) {
        size_t prev;
        if (!IsUnicodeWhitespace(PrevChar(text, s, &prev))) break;
        s = prev;
      }
      start = std::max(s, start_offset);
    }
    if (tok.rstrip) {
      while (stop < text.size()) {
        size_t next = stop;
        if (!IsUnicodeWhitespace(NextCodePoint(text, &next))) break;
        stop = next;
      }
    }
    if (start_offset < start) out->push_back({-1, start_offset, start});
    out->push_back({tok.id, start, stop});
    start_offset = stop;
    pos = std::max(pos, stop);
  }
  if (start_offset < text.size()) out->push_back({-1, start_offset, text.size()});
}

}  // namespace crescent::tokenizer
