// ChatTemplate: renders a model's chat template (tokenizer_config.json
// "chat_template", Jinja) exactly as transformers' apply_chat_template(
// messages, tools=..., add_generation_prompt=..., tokenize=False, **kwargs).
//
//   ASSIGN_OR_RETURN(auto tmpl, ChatTemplate::FromTokenizer(*tokenizer));
//   ASSIGN_OR_RETURN(std::string prompt,
//                    tmpl->Render(messages, /*tools=*/nullptr, true, {{"enable_thinking", false}}));
//   std::vector<int32_t> ids = tokenizer->Encode(prompt);
//
// The template sees: messages, tools (none when absent or null),
// add_generation_prompt, the tokenizer's special tokens (bos_token,
// eos_token, pad_token, unk_token, when set) and every key of `kwargs`
// (which override the others), like transformers does.
//
// Key order matters (tojson prints dicts in insertion order, as Python
// does), so pass nlohmann::ordered_json when the input was parsed from a
// request; the nlohmann::json overload sees keys sorted.
//
// Thread safety: immutable after creation; Render may run on many threads.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"
#include "model/tokenizer/jinja/template.h"

namespace crescent {

class Tokenizer;

class ChatTemplate {
 public:
  // Parses `source`; errors give the template line and construct.
  // `special_tokens` (bos_token, eos_token, ...) become template variables.
  static StatusOr<std::unique_ptr<ChatTemplate>> Create(std::string_view source,
                                                        const nlohmann::ordered_json& special_tokens);
  // The tokenizer's chat_template and special tokens; NOT_FOUND when the
  // model ships no chat template.
  static StatusOr<std::unique_ptr<ChatTemplate>> FromTokenizer(const Tokenizer& tokenizer);

  // messages: list of {"role", "content", ...}; tools: list of tool schemas
  // or null; kwargs: an object of extra template variables
  // (enable_thinking, ...) or null.
  StatusOr<std::string> Render(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                               bool add_generation_prompt, const nlohmann::ordered_json& kwargs) const;
  StatusOr<std::string> Render(const nlohmann::json& messages, const nlohmann::json& tools,
                               bool add_generation_prompt, const nlohmann::json& kwargs) const;

  // Bounds for hostile templates (defaults suit real ones).
  void set_limits(const jinja::RenderLimits& limits) { limits_ = limits; }

 private:
  ChatTemplate(jinja::Template tmpl, jinja::Value special_tokens)
      : template_(std::move(tmpl)), special_tokens_(std::move(special_tokens)) {}
  StatusOr<std::string> RenderValues(jinja::Value messages, jinja::Value tools, bool add_generation_prompt,
                                     const jinja::Value& kwargs) const;

  jinja::Template template_;
  jinja::Value special_tokens_;  // dict
  jinja::RenderLimits limits_;
};

}  // namespace crescent
