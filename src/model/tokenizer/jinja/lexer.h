// Tokens of a template (internal to parser.cc and lexer.cc).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace crescent::jinja {

struct Token {
  enum class Type { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };
  Type type;
  std::string text;  // text, name, operator, or the decoded string literal
  int line = 0;
};

StatusOr<std::vector<Token>> Lex(std::string_view source);

}  // namespace crescent::jinja
