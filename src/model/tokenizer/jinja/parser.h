// Lexer and parser for the Jinja subset chat templates use (internal).
// Lexing follows the environment transformers renders chat templates with:
// trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False, plus
// `{%- -%}` / `{{- -}}` / `{%+` whitespace control and `{% raw %}`.
#pragma once

#include <memory>
#include <string_view>

#include "common/status.h"
#include "model/tokenizer/jinja/ast.h"

namespace crescent::jinja {

// Errors read "line N: <what> in '<construct>'".
StatusOr<std::shared_ptr<const Program>> ParseProgram(std::string_view source);

}  // namespace crescent::jinja
