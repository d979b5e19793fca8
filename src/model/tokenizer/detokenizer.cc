#include "model/tokenizer/detokenizer.h"

#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/utf8.h"

namespace crescent {

Detokenizer::Detokenizer(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

std::string Detokenizer::Add(int32_t id) {
  if (skip_special_tokens_ && tokenizer_.IsSpecial(id)) return "";
  pending_.append(tokenizer_.TokenBytes(id));
  std::string out;
  const size_t used = tokenizer::AppendLossyUtf8(pending_, /*final=*/false, &out);
  pending_.erase(0, used);
  return out;
}

std::string Detokenizer::Finish() {
  std::string out;
  tokenizer::AppendLossyUtf8(pending_, /*final=*/true, &out);
  pending_.clear();
  return out;
}

}  // namespace crescent
