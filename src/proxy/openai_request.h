// The parts of OpenAI completion / chat requests and errors the proxy needs.
//
// The proxy does not interpret a request beyond this: it forwards the
// client's bytes unchanged to the decode instance and derives from them a
// prefill copy (max_tokens=1, no streaming) and what the router needs (a
// token estimate and the prompt for prefix hashing).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace crescent::proxy {

enum class Endpoint { kCompletions, kChatCompletions };
std::string_view EndpointPath(Endpoint e);  // "/v1/completions" ...

struct ParsedRequest {
  bool stream = false;
  // Text the prompt starts with, for prefix hashing: the completion prompt,
  // or the chat messages as "role\ncontent\n" in order (a deterministic
  // stand-in for the chat template: shared conversation prefixes stay
  // shared). Empty when the prompt is token ids.
  std::string prompt_text;
  std::vector<int32_t> prompt_tokens;  // when the prompt is token ids
  int64_t max_tokens = 0;              // 0 when the client did not say
  // The request with max_tokens=1 (and max_completion_tokens=1 for chat),
  // stream=false, without stream_options and min_tokens: what a prefill
  // instance gets.
  std::string prefill_body;
};

// INVALID_ARGUMENT with a message for the client when `body` is not a JSON
// object. Missing fields are left for the instance to judge.
StatusOr<ParsedRequest> ParseRequest(Endpoint endpoint, std::string_view body);

// {"error": {"message", "type", "param": null, "code": status}} as OpenAI
// (and vLLM) answer errors.
std::string ErrorJson(int status, std::string_view message);
// The same error as one server-sent event, then "data: [DONE]": how a
// stream that failed after it started ends (what vLLM sends too).
std::string StreamErrorEvents(int status, std::string_view message);
// The HTTP status for an error Status (INVALID_ARGUMENT 400, NOT_FOUND 404,
// ALREADY_EXISTS 409, PERMISSION_DENIED 403, UNAVAILABLE 503,
// DEADLINE_EXCEEDED 504, else 500).
int HttpStatusOf(const Status& s);

}  // namespace crescent::proxy
