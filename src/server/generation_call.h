// One /v1/completions or /v1/chat/completions request in flight: submits
// its engine requests (one per prompt, each with n samples), turns the
// engine's deltas into OpenAI responses (one JSON body, or SSE chunks as
// they come), records latency metrics, and aborts the engine requests when
// the client disconnects (which frees their KV blocks).
//
// Lifetime: shared; the engine callbacks and the disconnect hook each hold
// a reference, so the call lives until its last engine request finished.
// Thread safety: engine callbacks (engine thread) and the disconnect hook
// (an io thread) may race; state is guarded by mu_.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/http.h"
#include "engine/engine.h"
#include "server/server_metrics.h"

namespace crescent {
class Tokenizer;
}  // namespace crescent

namespace crescent::server {

// How to answer; fixed when the call is made.
struct CallOptions {
  bool chat = false;
  bool stream = false;
  bool include_usage = false;
  bool return_token_ids = false;
  bool tokens_as_token_ids = false;  // logprob tokens as "token_id:N"
  int n = 1;
  bool want_logprobs = false;        // completions logprobs / chat logprobs
  std::string response_id;           // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;               // unix seconds
  std::string model;                 // as answered in "model"
  http::Headers headers;             // extra response headers (X-Request-Id)
};

class GenerationCall : public std::enable_shared_from_this<GenerationCall> {
 public:
  // `tokenizer` may be null (then logprob tokens are "token_id:N" and there
  // is no text); it, `engine` and `metrics` must outlive the call.
  static std::shared_ptr<GenerationCall> Create(CallOptions options,
                                                std::shared_ptr<http::ResponseWriter> writer,
                                                engine::Engine* engine, const Tokenizer* tokenizer,
                                                ServerMetrics* metrics);

  // Submits the requests (already validated) and starts answering. On a
  // submit failure the ones already submitted are aborted and the client
  // gets the error.
  void Start(std::vector<engine::EngineRequest> requests);

 private:
  struct Choice {
    std::string text;
    std::vector<int32_t> token_ids;
    nlohmann::ordered_json logprobs;  // accumulated (non-streaming)
    std::string finish_reason;        // "" while running
    nlohmann::ordered_json stop_reason;
    int num_output_tokens = 0;
    size_t text_offset = 0;           // completions logprobs text_offset
  };
  struct PromptState {
    std::string engine_id;
    std::vector<int32_t> prompt;
    int num_prompt_tokens = 0;
    int num_cached_tokens = 0;
    bool first_token_seen = false;
    bool finished = false;
    std::chrono::steady_clock::time_point last_token_time;
  };

  GenerationCall(CallOptions options, std::shared_ptr<http::ResponseWriter> writer,
                 engine::Engine* engine, const Tokenizer* tokenizer, ServerMetrics* metrics);
  void OnOutput(size_t prompt_index, engine::RequestOutput out);
  void AbortAll();
  void FinishLocked();
  // Logprobs of a delta in the endpoint's format; advances text_offset.
  nlohmann::ordered_json LogprobsJson(const std::vector<engine::TokenLogprobs>& lps, Choice* c) const;
  void AppendLogprobs(const nlohmann::ordered_json& delta, Choice* c) const;
  std::string TokenString(int32_t id) const;
  nlohmann::ordered_json UsageJson() const;
  nlohmann::ordered_json ChunkHead() const;
  void WriteChunk(const nlohmann::ordered_json& chunk);

  // ---- constant after construction ----
  const CallOptions options_;
  const std::shared_ptr<http::ResponseWriter> writer_;
  engine::Engine* const engine_;
  const Tokenizer* const tokenizer_;
  ServerMetrics* const metrics_;
  const std::chrono::steady_clock::time_point arrival_;

  // ---- guarded by mu_ ----
  std::mutex mu_;
  std::vector<PromptState> prompts_;
  std::vector<Choice> choices_;  // prompt p, sample i at p * n + i
  int unfinished_ = 0;
  Status error_;                 // the first engine error, if any
  bool done_ = false;
};

// JSON text of `j`; invalid UTF-8 (never produced by the tokenizer) is
// replaced rather than thrown on.
std::string DumpJson(const nlohmann::ordered_json& j);

}  // namespace crescent::server
