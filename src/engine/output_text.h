// Detokenized output text of one sequence, with stop strings.
//
// The engine feeds each new token through an incremental detokenizer
// (TextStream, supplied by the model's tokenizer) and this class, which
// finds stop strings in the accumulated text and decides how much text is
// safe to stream: when stop strings are set, the last (longest stop - 1)
// characters are held back until they can no longer start a stop string, so
// a client never sees text that a later stop would have cut.
//
// Thread safety: none; owned by one sequence on the engine thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace crescent::engine {

// An incremental detokenizer for one sequence.
class TextStream {
 public:
  virtual ~TextStream() = default;
  // Feeds one output token; returns the text it completes (empty while a
  // multi-byte character or a merge is still open).
  virtual std::string Append(int32_t token) = 0;
  // At the end of the sequence: whatever is still held back (an incomplete
  // character), as the tokenizer's decode would render it.
  virtual std::string Finish() { return {}; }
};

// Makes a TextStream for a sequence that follows `prompt` (the prompt gives
// context for the first tokens' leading spaces).
using TextStreamFactory = std::function<std::unique_ptr<TextStream>(
    std::span<const int32_t> prompt, bool skip_special_tokens)>;

class OutputText {
 public:
  OutputText(std::vector<std::string> stop, bool include_stop_str_in_output);

  // Appends decoded text. Returns the stop string it completed, if any;
  // then the text is cut at that stop (after it, with
  // include_stop_str_in_output) and nothing more may be appended.
  std::optional<std::string> Append(const std::string& delta);

  // Text not yet handed out that is safe to hand out now; with `final`
  // (the sequence finished) everything left.
  std::string TakeDelta(bool final);

  const std::string& text() const { return text_; }

 private:
  const std::vector<std::string> stop_;
  const bool include_stop_;
  size_t max_stop_len_ = 0;
  std::string text_;
  size_t emitted_ = 0;
  bool stopped_ = false;
};

}  // namespace crescent::engine
