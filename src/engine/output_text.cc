#include "engine/output_text.h"

#include <algorithm>

namespace crescent::engine {

OutputText::OutputText(std::vector<std::string> stop, bool include_stop_str_in_output)
    : stop_(std::move(stop)), include_stop_(include_stop_str_in_output) {
  for (const auto& s : stop_) max_stop_len_ = std::max(max_stop_len_, s.size());
}

std::optional<std::string> OutputText::Append(const std::string& delta) {
  if (stopped_ || delta.empty()) return std::nullopt;
  const size_t old_len = text_.size();
  text_ += delta;
  if (stop_.empty()) return std::nullopt;
  // A stop string completed by this delta starts at most max_stop_len_ - 1
  // bytes before it.
  const size_t from = old_len >= max_stop_len_ ? old_len - max_stop_len_ + 1 : 0;
  size_t best = std::string::npos;
  const std::string* which = nullptr;
  for (const auto& s : stop_) {
    const size_t pos = text_.find(s, from);
    if (pos != std::string::npos && pos < best) {
      best = pos;
      which = &s;
    }
  }
  if (which == nullptr) return std::nullopt;
  stopped_ = true;
  text_.resize(include_stop_ ? best + which->size() : best);
  emitted_ = std::min(emitted_, text_.size());
  return *which;
}

std::string OutputText::TakeDelta(bool final) {
  size_t safe = text_.size();
  if (!final && !stopped_ && max_stop_len_ > 0) {
    safe = text_.size() >= max_stop_len_ - 1 ? text_.size() - (max_stop_len_ - 1) : 0;
  }
  // Never split a UTF-8 character.
  while (safe > emitted_ && safe < text_.size() &&
         (static_cast<unsigned char>(text_[safe]) & 0xC0) == 0x80) {
    --safe;
  }
  if (safe <= emitted_) return {};
  std::string out = text_.substr(emitted_, safe - emitted_);
  emitted_ = safe;
  return out;
}

}  // namespace crescent::engine
