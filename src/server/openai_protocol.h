// The OpenAI / vLLM request formats `crescent serve` accepts, parsed into
// engine terms, and the error format it answers with.
//
// Parsing is strict about types, lenient about presence: a field that is
// absent or null takes vLLM's default; a field of the wrong type or out of
// range is an INVALID_ARGUMENT whose message names the field, e.g.
// "temperature must be a number, got \"hot\"". Fields vLLM accepts that
// change nothing here (user, response_format "text", ...) are ignored;
// fields this server cannot honour (echo, best_of > n, suffix) are refused,
// never silently dropped.
//
// Thread safety: free functions over values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "engine/sampling_params.h"

namespace crescent::server {

using Json = nlohmann::ordered_json;  // keeps the client's key order (chat templates)

// What both endpoints share.
struct GenerationRequest {
  std::string model;              // "" when absent (the served model is meant)
  engine::SamplingParams params;  // max_tokens: see max_tokens_given
  bool max_tokens_given = false;  // false: completions 16, chat: the rest of the context
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool skip_special_tokens = true;
  bool return_token_ids = false;       // vLLM: choices[].token_ids, prompt_token_ids
  bool tokens_as_token_ids = false;    // vLLM return_tokens_as_token_ids: "token_id:N"
};

struct CompletionRequest : GenerationRequest {
  // One entry per prompt: token ids, or text to tokenize.
  struct Prompt {
    std::vector<int32_t> ids;
    std::optional<std::string> text;
  };
  std::vector<Prompt> prompts;
  bool add_special_tokens = true;
};

struct ChatRequest : GenerationRequest {
  Json messages;            // list of {"role", "content", ...}; content parts flattened
  Json tools;               // null or a list
  Json template_kwargs;     // chat_template_kwargs (object or null)
  bool add_generation_prompt = true;
  bool add_special_tokens = false;
  int top_logprobs = 0;     // with logprobs=true
  bool logprobs = false;
};

// Parses a request body; malformed JSON is INVALID_ARGUMENT too.
StatusOr<Json> ParseJsonBody(std::string_view body);
StatusOr<CompletionRequest> ParseCompletionRequest(const Json& body);
StatusOr<ChatRequest> ParseChatRequest(const Json& body);

// POST /tokenize: {"prompt": "..."} or {"messages": [...]}; POST /detokenize:
// {"tokens": [...]}.
struct TokenizeRequest {
  std::string model;
  std::optional<std::string> prompt;
  Json messages;  // when chat
  Json tools;
  Json template_kwargs;
  bool add_generation_prompt = true;
  bool add_special_tokens = true;
};
StatusOr<TokenizeRequest> ParseTokenizeRequest(const Json& body);
StatusOr<std::vector<int32_t>> ParseDetokenizeRequest(const Json& body, std::string* model);

// ---- errors -----------------------------------------------------------

// The HTTP status of an error Status: INVALID_ARGUMENT and
// FAILED_PRECONDITION 400, NOT_FOUND 404, ALREADY_EXISTS 409,
// RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, else 500.
int HttpStatusOf(const Status& status);
// {"error": {"message", "type", "param", "code"}} as vLLM answers, with type
// BadRequestError / NotFoundError / InternalServerError ... and code the
// HTTP status.
std::string ErrorJson(int http_status, std::string_view message,
                      std::optional<std::string_view> param = std::nullopt);

}  // namespace crescent::server
