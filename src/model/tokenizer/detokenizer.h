// Incremental detokenization for streaming: feed generated ids one at a time,
// get text pieces that are always whole UTF-8 characters.
//
//   Detokenizer detok(*tokenizer);
//   for (int32_t id : generated) send(detok.Add(id));
//   send(detok.Finish());
//
// Guarantees: every piece is valid UTF-8 (a character split across tokens is
// held back until its last byte arrives); concatenating all pieces and
// Finish() equals Tokenizer::Decode(all ids) exactly, so nothing is dropped
// (bytes that can never form a character become U+FFFD, as in Decode).
//
// Thread safety: one Detokenizer per stream, not shared between threads. It
// borrows the Tokenizer, which must outlive it.
#pragma once

#include <cstdint>
#include <string>

namespace crescent {

class Tokenizer;

class Detokenizer {
 public:
  explicit Detokenizer(const Tokenizer& tokenizer, bool skip_special_tokens = true);

  // Text completed by `id` (often empty while a multi-byte character is
  // incomplete). Unknown ids add nothing.
  std::string Add(int32_t id);

  // Whatever is still held back, as U+FFFD (call at end of stream).
  std::string Finish();

  // Bytes held back waiting for the rest of a character (0..3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;  // bytes of an incomplete UTF-8 character
};

}  // namespace crescent
