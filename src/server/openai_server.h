// The OpenAI / vLLM-compatible HTTP API of `crescent serve`, over an Engine:
//   POST /v1/completions, POST /v1/chat/completions (JSON or SSE streams)
//   GET  /v1/models, GET /health, GET /version, GET /metrics (vLLM's names)
//   POST /tokenize, POST /detokenize
// Every response carries X-Request-Id (the client's, or a generated one).
// Errors are OpenAI's error JSON with vLLM's status codes
// (openai_protocol.h).
//
// Without a tokenizer (a checkpoint without tokenizer.json) the server
// takes token-id prompts only and returns no text; use "return_token_ids":
// true to see the generated ids.
//
// Ownership: borrows the engine, tokenizer and chat template, which must
// outlive the server and every request still running (stop the HTTP server
// first, then destroy the engine).
// Thread safety: handlers run on the HTTP io threads; everything is
// thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/http.h"
#include "engine/engine.h"

namespace crescent {
class Tokenizer;
class ChatTemplate;
}  // namespace crescent

namespace crescent::server {

class ServerMetrics;

struct OpenAiServerOptions {
  // Names the model answers to (vLLM --served-model-name); the first is
  // reported in responses. Requests for another model get 404.
  std::vector<std::string> served_model_names;
  std::string model_path;  // "root" in /v1/models
};

class OpenAiServer {
 public:
  // `tokenizer` and `chat_template` may be null (see above).
  OpenAiServer(OpenAiServerOptions options, engine::Engine* engine, const Tokenizer* tokenizer,
               const ChatTemplate* chat_template);
  ~OpenAiServer();
  OpenAiServer(const OpenAiServer&) = delete;
  OpenAiServer& operator=(const OpenAiServer&) = delete;

  // Adds the routes above to `server` (before it starts).
  void RegisterRoutes(http::Server* server);

  ServerMetrics& metrics();

  struct Impl;  // in the .cc

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace crescent::server
