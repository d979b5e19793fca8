// A Jinja template engine for chat templates: the subset of Jinja2 that the
// chat templates shipped with Hugging Face models use, rendered the way
// transformers' apply_chat_template renders them (trim_blocks, lstrip_blocks,
// loopcontrols, its tojson, raise_exception, strftime_now).
//
//   ASSIGN_OR_RETURN(jinja::Template t, jinja::Template::Parse(source));
//   ASSIGN_OR_RETURN(std::string text, t.Render(context));  // context: a dict Value
//
// Supported: {{ }}, {% if/elif/else %}, {% for %} with else, inline if,
// tuple unpacking and loop.* (index, index0, revindex, revindex0, first,
// last, length, previtem, nextitem, cycle), break/continue, {% set %}
// (plain, tuple, namespace attribute, block), namespace(), {% macro %} with
// defaults and keyword arguments, {% call %}, {% filter %}, {% raw %},
// {% generation %}; expressions with Python semantics (arithmetic, ~, in,
// comparisons, and/or/not, conditional expressions, list/dict/tuple
// literals, attribute and item access, slicing such as [::-1]); filters,
// tests and str/dict/list methods listed in builtins.cc.
// Not supported (a parse or render error says so): extends/include/import,
// recursive loops, call blocks with caller arguments.
//
// Errors name the template line and the construct ("template line 12: unknown
// filter 'foo'"); raise_exception("msg") fails rendering with "msg".
//
// Thread safety: a parsed Template is immutable; Render may run on many
// threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "model/tokenizer/jinja/value.h"

namespace crescent::jinja {

struct Program;

// Bounds that keep a hostile template from hanging or exhausting memory.
struct RenderLimits {
  size_t max_output_bytes = size_t{256} << 20;  // rendered text
  uint64_t max_steps = 50'000'000;              // evaluated nodes + loop iterations
  int max_call_depth = 64;                      // nested macro calls
};

class Template {
 public:
  static StatusOr<Template> Parse(std::string_view source);

  // Renders with `context` (a dict Value) as the template's variables.
  StatusOr<std::string> Render(const Value& context, const RenderLimits& limits = {}) const;

 private:
  explicit Template(std::shared_ptr<const Program> program) : program_(std::move(program)) {}
  std::shared_ptr<const Program> program_;
};

}  // namespace crescent::jinja
