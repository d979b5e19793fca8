#include "model/tokenizer/chat_template.h"

#include <nlohmann/json.hpp>

#include "model/tokenizer/tokenizer.h"

namespace crescent {

using jinja::Value;

StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::Create(std::string_view source,
                                                             const nlohmann::ordered_json& special_tokens) {
  auto tmpl = jinja::Template::Parse(source);
  if (!tmpl.ok()) return tmpl.status().WithContext("chat template");
  Value specials = Value::FromJson(special_tokens.is_object() ? special_tokens : nlohmann::ordered_json::object());
  return std::unique_ptr<ChatTemplate>(new ChatTemplate(std::move(tmpl).value(), std::move(specials)));
}

StatusOr<std::unique_ptr<ChatTemplate>> ChatTemplate::FromTokenizer(const Tokenizer& tokenizer) {
  if (tokenizer.ChatTemplateSource().empty()) {
    return NotFoundError("tokenizer_config.json has no chat_template; this model cannot take chat messages "
                         "(send a plain prompt instead)");
  }
  nlohmann::ordered_json specials = nlohmann::ordered_json::object();
  // Like transformers' special_tokens_map: only tokens that are set.
  if (!tokenizer.BosToken().empty()) specials["bos_token"] = tokenizer.BosToken();
  if (!tokenizer.EosToken().empty()) specials["eos_token"] = tokenizer.EosToken();
  if (!tokenizer.UnkToken().empty()) specials["unk_token"] = tokenizer.UnkToken();
  if (!tokenizer.PadToken().empty()) specials["pad_token"] = tokenizer.PadToken();
  return Create(tokenizer.ChatTemplateSource(), specials);
}

StatusOr<std::string> ChatTemplate::RenderValues(Value messages, Value tools, bool add_generation_prompt,
                                                 const Value& kwargs) const {
  if (!messages.is_array()) return InvalidArgumentError("chat template: messages must be a list of objects");
  auto ctx = std::make_shared<jinja::Object>();
  ctx->items = special_tokens_.object().items;
  ctx->Set("messages", std::move(messages));
  ctx->Set("tools", tools.is_array() && tools.array().empty() ? Value::None() : std::move(tools));
  ctx->Set("documents", Value::None());
  ctx->Set("add_generation_prompt", Value(add_generation_prompt));
  if (kwargs.is_object()) {
    for (const auto& [k, v] : kwargs.object().items) ctx->Set(k, v);
  } else if (!kwargs.is_none() && !kwargs.is_undefined()) {
    return InvalidArgumentError("chat template: kwargs must be a JSON object");
  }
  auto out = template_.Render(Value(std::move(ctx)), limits_);
  if (!out.ok()) return out.status().WithContext("chat template");
  return out;
}

StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& messages,
                                           const nlohmann::ordered_json& tools, bool add_generation_prompt,
                                           const nlohmann::ordered_json& kwargs) const {
  return RenderValues(Value::FromJson(messages), Value::FromJson(tools), add_generation_prompt,
                      Value::FromJson(kwargs));
}

StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& messages, const nlohmann::json& tools,
                                           bool add_generation_prompt, const nlohmann::json& kwargs) const {
  return RenderValues(Value::FromJson(messages), Value::FromJson(tools), add_generation_prompt,
                      Value::FromJson(kwargs));
}

}  // namespace crescent
