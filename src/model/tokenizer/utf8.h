// UTF-8 helpers shared by the tokenizer, the detokenizer and the template
// engine. Everything here works on arbitrary bytes: invalid input never
// crashes, it is replaced by U+FFFD the way Rust's String::from_utf8_lossy
// (and so Hugging Face tokenizers' decode) does it: one U+FFFD per maximal
// invalid subpart (Unicode 15, section 3.9, "U+FFFD substitution").
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace crescent::tokenizer {

// Appends the UTF-8 encoding of `cp` (must be <= 0x10FFFF) to `out`.
void AppendUtf8(char32_t cp, std::string* out);

// Decodes one code point at `s[*pos]` and advances *pos. Invalid bytes give
// U+FFFD and advance by the maximal invalid subpart (at least 1 byte).
char32_t NextCodePoint(std::string_view s, size_t* pos);

// Appends the valid UTF-8 prefix of `in` to `out`, replacing invalid
// sequences by U+FFFD. When `final` is false an incomplete sequence at the
// end of `in` (one that more bytes could still complete) is left out.
// Returns the number of bytes of `in` consumed; the rest must be passed again
// with more bytes appended. Concatenating the outputs of successive calls
// equals one call on the whole input with final = true.
size_t AppendLossyUtf8(std::string_view in, bool final, std::string* out);

// True when `s` is entirely valid UTF-8.
bool IsValidUtf8(std::string_view s);

}  // namespace crescent::tokenizer
