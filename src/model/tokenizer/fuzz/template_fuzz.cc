// libFuzzer target: parse arbitrary bytes as a chat template and render the
// ones that parse, with tight limits. Must never crash or hang; errors are
// fine. Build and run: see fuzz/CMakeLists.txt.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "model/tokenizer/jinja/template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const crescent::jinja::Value context = crescent::jinja::Value::FromJson(nlohmann::ordered_json::parse(R"({
    "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi <tool_response>"},
                 {"role": "assistant", "content": "<think>\nr\n</think>\n\nok",
                  "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>", "x": 1.5, "n": null})"));
  auto t = crescent::jinja::Template::Parse(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!t.ok()) return 0;
  crescent::jinja::RenderLimits limits;
  limits.max_steps = 200000;
  limits.max_output_bytes = 1 << 20;
  limits.max_call_depth = 32;
  auto r = t->Render(context, limits);
  (void)r;
  return 0;
}
