#include "proxy/openai_request.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace crescent::proxy {

using nlohmann::json;

std::string_view EndpointPath(Endpoint e) {
  return e == Endpoint::kCompletions ? "/v1/completions" : "/v1/chat/completions";
}

namespace {

void AppendContent(const json& content, std::string& out) {
  if (content.is_string()) {
    out += content.get_ref<const std::string&>();
  } else if (content.is_array()) {  // [{"type": "text", "text": ...}, ...]
    for (const auto& part : content) {
      if (part.is_object() && part.contains("text") && part["text"].is_string())
        out += part["text"].get_ref<const std::string&>();
    }
  }
}

}  // namespace

StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, std::string_view body) {
  json req = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (req.is_discarded() || !req.is_object())
    return InvalidArgumentError("the request body must be a JSON object");
  ParsedRequest p;
  if (auto it = req.find("stream"); it != req.end() && it->is_boolean()) p.stream = it->get<bool>();
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    auto it = req.find(key);
    if (it != req.end() && it->is_number_integer()) p.max_tokens = it->get<int64_t>();
  }
  if (endpoint == Endpoint::kCompletions) {
    auto it = req.find("prompt");
    if (it != req.end()) {
      const json& prompt = *it;
      if (prompt.is_string()) {
        p.prompt_text = prompt.get<std::string>();
      } else if (prompt.is_array() && !prompt.empty()) {
        // A list of prompts: the first one routes the request.
        const json& first = prompt[0];
        if (first.is_string()) {
          p.prompt_text = first.get<std::string>();
        } else if (first.is_number_integer()) {
          for (const auto& t : prompt)
            if (t.is_number_integer()) p.prompt_tokens.push_back(t.get<int32_t>());
        } else if (first.is_array()) {
          for (const auto& t : first)
            if (t.is_number_integer()) p.prompt_tokens.push_back(t.get<int32_t>());
        }
      }
    }
  } else if (auto it = req.find("messages"); it != req.end() && it->is_array()) {
    for (const auto& m : *it) {
      if (!m.is_object()) continue;
      if (auto r = m.find("role"); r != m.end() && r->is_string()) p.prompt_text += r->get<std::string>();
      p.prompt_text += '\n';
      if (auto c = m.find("content"); c != m.end()) AppendContent(*c, p.prompt_text);
      p.prompt_text += '\n';
    }
  }
  req["max_tokens"] = 1;
  if (endpoint == Endpoint::kChatCompletions) req["max_completion_tokens"] = 1;
  req["stream"] = false;
  req.erase("stream_options");  // only valid with stream=true
  req.erase("min_tokens");      // must not exceed max_tokens
  p.prefill_body = req.dump();
  return p;
}

std::string ErrorJson(int status, std::string_view message) {
  std::string_view type = status == 400   ? "BadRequestError"
                          : status == 401 ? "AuthenticationError"
                          : status == 403 ? "PermissionDeniedError"
                          : status == 404 ? "NotFoundError"
                          : status == 409 ? "ConflictError"
                          : status < 500  ? "InvalidRequestError"
                          : status == 503 ? "ServiceUnavailableError"
                          : status == 504 ? "TimeoutError"
                                          : "InternalServerError";
  json j = {{"error",
             {{"message", message}, {"type", type}, {"param", nullptr}, {"code", status}}}};
  return j.dump();
}

std::string StreamErrorEvents(int status, std::string_view message) {
  return fmt::format("data: {}\n\ndata: [DONE]\n\n", ErrorJson(status, message));
}

int HttpStatusOf(const Status& s) {
  switch (s.code()) {
    case StatusCode::kInvalidArgument: return 400;
    case StatusCode::kNotFound: return 404;
    case StatusCode::kAlreadyExists: return 409;
    case StatusCode::kPermissionDenied: return 403;
    case StatusCode::kUnavailable: return 503;
    case StatusCode::kDeadlineExceeded: return 504;
    default: return 500;
  }
}

}  // namespace crescent::proxy
