#include "server/openai_protocol.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

namespace crescent::server {
namespace {

// A value as the client wrote it, shortened, for error messages.
std::string Shown(const Json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

Status TypeError(std::string_view field, std::string_view expected, const Json& got) {
  return InvalidArgumentError(fmt::format("{} must be {}, got {}", field, expected, Shown(got)));
}

// Field readers: absent or null leaves *out unchanged and returns false.
StatusOr<bool> ReadBool(const Json& body, const char* key, bool* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return false;
  if (!it->is_boolean()) return TypeError(key, "a boolean", *it);
  *out = it->get<bool>();
  return true;
}

StatusOr<bool> ReadDouble(const Json& body, const char* key, double* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return false;
  if (!it->is_number()) return TypeError(key, "a number", *it);
  *out = it->get<double>();
  return true;
}

StatusOr<bool> ReadFloat(const Json& body, const char* key, float* out) {
  double d = *out;
  ASSIGN_OR_RETURN(bool present, ReadDouble(body, key, &d));
  if (present) *out = static_cast<float>(d);
  return present;
}

// Integers; an integral float (2.0) is accepted as pydantic does.
StatusOr<bool> ReadInt64(const Json& body, const char* key, int64_t* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return false;
  if (it->is_number_integer()) {
    if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      return InvalidArgumentError(fmt::format("{} is too large: {}", key, Shown(*it)));
    *out = it->get<int64_t>();
    return true;
  }
  if (it->is_number_float()) {
    double d = it->get<double>();
    if (std::floor(d) == d && std::fabs(d) < 9e15) {
      *out = static_cast<int64_t>(d);
      return true;
    }
  }
  return TypeError(key, "an integer", *it);
}

StatusOr<bool> ReadInt(const Json& body, const char* key, int* out) {
  int64_t v = *out;
  ASSIGN_OR_RETURN(bool present, ReadInt64(body, key, &v));
  if (!present) return false;
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    return InvalidArgumentError(fmt::format("{} is out of range: {}", key, v));
  *out = static_cast<int>(v);
  return true;
}

StatusOr<bool> ReadString(const Json& body, const char* key, std::string* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return false;
  if (!it->is_string()) return TypeError(key, "a string", *it);
  *out = it->get<std::string>();
  return true;
}

// A list of token ids ([1, 2, 3]); `what` names it in errors.
StatusOr<std::vector<int32_t>> TokenList(const Json& v, std::string_view what) {
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (const Json& t : v) {
    if (!t.is_number_integer())
      return TypeError(what, "a list of integer token ids", v);
    const int64_t id = t.get<int64_t>();
    if (id < 0 || id > std::numeric_limits<int32_t>::max())
      return InvalidArgumentError(fmt::format("{}: token id {} is out of range", what, id));
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

// Fields common to completions and chat (vLLM's SamplingParams extras).
Status ParseCommon(const Json& body, bool chat, GenerationRequest* r) {
  if (!body.is_object()) return InvalidArgumentError("the request body must be a JSON object");
  engine::SamplingParams& p = r->params;
  RETURN_IF_ERROR(ReadString(body, "model", &r->model).status());
  RETURN_IF_ERROR(ReadBool(body, "stream", &r->stream).status());
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return TypeError("stream_options", "an object", *it);
    if (!r->stream)
      return InvalidArgumentError("stream_options is only allowed with \"stream\": true");
    RETURN_IF_ERROR(ReadBool(*it, "include_usage", &r->include_usage).status());
  }
  RETURN_IF_ERROR(ReadInt(body, "n", &p.n).status());
  int best_of = p.n;
  RETURN_IF_ERROR(ReadInt(body, "best_of", &best_of).status());
  if (best_of != p.n)
    return InvalidArgumentError(fmt::format(
        "best_of {} differs from n {}: best_of is not supported (leave it unset)", best_of, p.n));
  RETURN_IF_ERROR(ReadFloat(body, "temperature", &p.temperature).status());
  RETURN_IF_ERROR(ReadFloat(body, "top_p", &p.top_p).status());
  RETURN_IF_ERROR(ReadInt(body, "top_k", &p.top_k).status());
  RETURN_IF_ERROR(ReadFloat(body, "min_p", &p.min_p).status());
  RETURN_IF_ERROR(ReadFloat(body, "repetition_penalty", &p.repetition_penalty).status());
  RETURN_IF_ERROR(ReadFloat(body, "presence_penalty", &p.presence_penalty).status());
  RETURN_IF_ERROR(ReadFloat(body, "frequency_penalty", &p.frequency_penalty).status());
  int64_t seed = 0;
  ASSIGN_OR_RETURN(bool has_seed, ReadInt64(body, "seed", &seed));
  if (has_seed) p.seed = static_cast<uint64_t>(seed);

  int max_tokens = 0;
  ASSIGN_OR_RETURN(bool has_max, ReadInt(body, "max_tokens", &max_tokens));
  if (chat) {
    // max_completion_tokens is OpenAI's newer name; it wins when both are set.
    ASSIGN_OR_RETURN(bool has_mct, ReadInt(body, "max_completion_tokens", &max_tokens));
    has_max |= has_mct;
  }
  if (has_max) {
    if (max_tokens < 1)
      return InvalidArgumentError(fmt::format("max_tokens must be at least 1, got {}", max_tokens));
    p.max_tokens = max_tokens;
    r->max_tokens_given = true;
  }
  RETURN_IF_ERROR(ReadInt(body, "min_tokens", &p.min_tokens).status());

  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      if (!it->get<std::string>().empty()) p.stop.push_back(it->get<std::string>());
    } else if (it->is_array()) {
      for (const Json& s : *it) {
        if (!s.is_string()) return TypeError("stop", "a string or a list of strings", *it);
        if (!s.get<std::string>().empty()) p.stop.push_back(s.get<std::string>());
      }
    } else {
      return TypeError("stop", "a string or a list of strings", *it);
    }
  }
  if (auto it = body.find("stop_token_ids"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) return TypeError("stop_token_ids", "a list of token ids", *it);
    ASSIGN_OR_RETURN(p.stop_token_ids, TokenList(*it, "stop_token_ids"));
  }
  RETURN_IF_ERROR(ReadBool(body, "ignore_eos", &p.ignore_eos).status());
  RETURN_IF_ERROR(
      ReadBool(body, "include_stop_str_in_output", &p.include_stop_str_in_output).status());
  RETURN_IF_ERROR(ReadBool(body, "skip_special_tokens", &r->skip_special_tokens).status());
  RETURN_IF_ERROR(ReadBool(body, "return_token_ids", &r->return_token_ids).status());
  RETURN_IF_ERROR(
      ReadBool(body, "return_tokens_as_token_ids", &r->tokens_as_token_ids).status());
  return OkStatus();
}

// Chat content given as a list of parts: the text parts joined (vLLM's
// "string" content format, what text-only templates expect).
StatusOr<Json> FlattenMessages(const Json& messages) {
  if (!messages.is_array() || messages.empty())
    return TypeError("messages", "a non-empty list of messages", messages);
  Json out = Json::array();
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& m = messages[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) return TypeError(where, "an object with role and content", m);
    auto role = m.find("role");
    if (role == m.end() || !role->is_string())
      return InvalidArgumentError(where + ".role must be a string");
    Json copy = m;
    auto content = m.find("content");
    if (content != m.end() && content->is_array()) {
      std::string text;
      for (const Json& part : *content) {
        if (!part.is_object() || !part.contains("type"))
          return TypeError(where + ".content", "a string or a list of content parts", *content);
        if (part["type"] != "text")
          return InvalidArgumentError(fmt::format(
              "{}.content: part type {} is not supported (text only)", where, Shown(part["type"])));
        auto t = part.find("text");
        if (t == part.end() || !t->is_string())
          return InvalidArgumentError(where + ".content: a text part needs a string \"text\"");
        if (!text.empty()) text += "\n";
        text += t->get<std::string>();
      }
      copy["content"] = text;
    } else if (content != m.end() && !content->is_string() && !content->is_null()) {
      return TypeError(where + ".content", "a string or a list of content parts", *content);
    }
    out.push_back(std::move(copy));
  }
  return out;
}

Status ReadTemplateFields(const Json& body, Json* tools, Json* kwargs, bool* add_generation_prompt) {
  if (auto it = body.find("tools"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) return TypeError("tools", "a list of tool definitions", *it);
    *tools = *it;
  }
  if (auto it = body.find("chat_template_kwargs"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return TypeError("chat_template_kwargs", "an object", *it);
    *kwargs = *it;
  }
  RETURN_IF_ERROR(ReadBool(body, "add_generation_prompt", add_generation_prompt).status());
  return OkStatus();
}

}  // namespace

StatusOr<Json> ParseJsonBody(std::string_view body) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Re-parse with exceptions for the position of the error.
    try {
      (void)Json::parse(body);
    } catch (const Json::parse_error& e) {
      return InvalidArgumentError(fmt::format("malformed JSON in the request body: {}", e.what()));
    }
    return InvalidArgumentError("malformed JSON in the request body");
  }
  if (!j.is_object()) return InvalidArgumentError("the request body must be a JSON object");
  return j;
}

StatusOr<CompletionRequest> ParseCompletionRequest(const Json& body) {
  CompletionRequest r;
  RETURN_IF_ERROR(ParseCommon(body, /*chat=*/false, &r));
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null())
    return InvalidArgumentError("prompt is required (a string, a list of strings, token ids or "
                                "a list of token-id lists)");
  const Json& prompt = *it;
  constexpr const char* kShape =
      "a string, a list of strings, a list of token ids or a list of token-id lists";
  if (prompt.is_string()) {
    r.prompts.push_back({{}, prompt.get<std::string>()});
  } else if (prompt.is_array()) {
    if (prompt.empty()) return InvalidArgumentError("prompt must not be empty");
    if (prompt[0].is_number()) {
      ASSIGN_OR_RETURN(auto ids, TokenList(prompt, "prompt"));
      r.prompts.push_back({std::move(ids), std::nullopt});
    } else {
      for (const Json& p : prompt) {
        if (p.is_string()) {
          r.prompts.push_back({{}, p.get<std::string>()});
        } else if (p.is_array()) {
          if (p.empty()) return InvalidArgumentError("prompt: a token-id list must not be empty");
          ASSIGN_OR_RETURN(auto ids, TokenList(p, "prompt"));
          r.prompts.push_back({std::move(ids), std::nullopt});
        } else {
          return TypeError("prompt", kShape, prompt);
        }
      }
    }
  } else {
    return TypeError("prompt", kShape, prompt);
  }
  if (auto lp = body.find("logprobs"); lp != body.end() && !lp->is_null()) {
    if (!lp->is_number_integer()) return TypeError("logprobs", "an integer (0..20)", *lp);
    r.params.logprobs = lp->get<int>();
  }
  bool echo = false;
  RETURN_IF_ERROR(ReadBool(body, "echo", &echo).status());
  if (echo) return InvalidArgumentError("echo is not supported by this server (leave it false)");
  std::string suffix;
  RETURN_IF_ERROR(ReadString(body, "suffix", &suffix).status());
  if (!suffix.empty()) return InvalidArgumentError("suffix is not supported by this server");
  RETURN_IF_ERROR(ReadBool(body, "add_special_tokens", &r.add_special_tokens).status());
  return r;
}

StatusOr<ChatRequest> ParseChatRequest(const Json& body) {
  ChatRequest r;
  RETURN_IF_ERROR(ParseCommon(body, /*chat=*/true, &r));
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) return InvalidArgumentError("messages is required");
  ASSIGN_OR_RETURN(r.messages, FlattenMessages(*it));
  RETURN_IF_ERROR(ReadTemplateFields(body, &r.tools, &r.template_kwargs, &r.add_generation_prompt));
  RETURN_IF_ERROR(ReadBool(body, "logprobs", &r.logprobs).status());
  ASSIGN_OR_RETURN(bool has_top, ReadInt(body, "top_logprobs", &r.top_logprobs));
  if (has_top && !r.logprobs && r.top_logprobs > 0)
    return InvalidArgumentError("top_logprobs needs \"logprobs\": true");
  if (r.logprobs) r.params.logprobs = r.top_logprobs;
  RETURN_IF_ERROR(ReadBool(body, "add_special_tokens", &r.add_special_tokens).status());
  return r;
}

StatusOr<TokenizeRequest> ParseTokenizeRequest(const Json& body) {
  TokenizeRequest r;
  RETURN_IF_ERROR(ReadString(body, "model", &r.model).status());
  if (auto it = body.find("messages"); it != body.end() && !it->is_null()) {
    ASSIGN_OR_RETURN(r.messages, FlattenMessages(*it));
    r.add_special_tokens = false;
    RETURN_IF_ERROR(ReadTemplateFields(body, &r.tools, &r.template_kwargs, &r.add_generation_prompt));
  } else {
    std::string prompt;
    ASSIGN_OR_RETURN(bool has_prompt, ReadString(body, "prompt", &prompt));
    if (!has_prompt) return InvalidArgumentError("prompt (a string) or messages is required");
    r.prompt = std::move(prompt);
  }
  RETURN_IF_ERROR(ReadBool(body, "add_special_tokens", &r.add_special_tokens).status());
  return r;
}

StatusOr<std::vector<int32_t>> ParseDetokenizeRequest(const Json& body, std::string* model) {
  RETURN_IF_ERROR(ReadString(body, "model", model).status());
  auto it = body.find("tokens");
  if (it == body.end() || !it->is_array())
    return InvalidArgumentError("tokens (a list of token ids) is required");
  return TokenList(*it, "tokens");
}

int HttpStatusOf(const Status& status) {
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kOutOfRange:
      return 400;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kAlreadyExists: return 409;
    case StatusCode::kResourceExhausted: return 429;
    case StatusCode::kUnavailable: return 503;
    default: return 500;
  }
}

std::string ErrorJson(int http_status, std::string_view message,
                      std::optional<std::string_view> param) {
  const char* type = "InternalServerError";
  switch (http_status) {
    case 400: type = "BadRequestError"; break;
    case 404: type = "NotFoundError"; break;
    case 405: type = "MethodNotAllowed"; break;
    case 409: type = "ConflictError"; break;
    case 413: type = "RequestEntityTooLarge"; break;
    case 429: type = "RateLimitError"; break;
    case 503: type = "ServiceUnavailableError"; break;
    default: break;
  }
  Json e = {{"message", message},
            {"type", type},
            {"param", param ? Json(*param) : Json(nullptr)},
            {"code", http_status}};
  return Json{{"error", std::move(e)}}.dump();
}

}  // namespace crescent::server
