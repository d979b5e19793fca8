// FakeInstance: a real HTTP server that behaves like a vLLM instance's
// OpenAI API (/v1/models, /health, /v1/completions, /v1/chat/completions,
// with and without SSE streaming), for the proxy's tests and benchmarks.
//
// Output is deterministic: a request for N tokens (max_tokens, or
// max_completion_tokens, default 16) produces "t0 t1 ... t(N-1)"; streamed,
// one SSE event per token, `token_interval` apart (all at once when zero),
// then "data: [DONE]". Faults are injected by the Behavior knobs, which may
// be changed while it runs: answer errors, hang, fail health probes, or die
// (stop serving, every connection dropped) after some events.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace crescent::proxy::testing {

struct FakeBehavior {
  int inference_status = 200;  // != 200: inference requests get this error
  bool hang = false;           // inference requests never get an answer
  int health_status = 200;     // GET /health answers this
  int die_after_events = -1;   // >= 0: the whole instance dies after this many SSE events
  std::chrono::milliseconds token_interval{0};
  // Delay before answering a non-streamed request (e.g. a slow prefill).
  std::chrono::milliseconds answer_delay{0};
};

struct SeenRequest {
  std::string path;
  std::string body;
  std::string request_id;  // X-Request-Id header
};

class FakeInstance {
 public:
  // Listens on 127.0.0.1:port (0: ephemeral). `name` appears in each
  // response as "served_by" so that tests can tell instances apart.
  static StatusOr<std::unique_ptr<FakeInstance>> Start(std::string name, uint16_t port = 0,
                                                      std::string model = "fake-model",
                                                      int io_threads = 1);
  ~FakeInstance();

  uint16_t port() const;
  std::string address() const;  // "127.0.0.1:PORT"
  const std::string& name() const;

  void SetBehavior(const FakeBehavior& b);
  FakeBehavior behavior() const;
  // Stops serving at once, dropping every connection (a crash, seen from outside).
  void Die();
  bool dead() const;

  std::vector<SeenRequest> Seen() const;  // inference requests, in arrival order
  size_t inference_requests() const;
  int active_streams() const;

  struct Impl;

 private:
  FakeInstance() = default;
  std::shared_ptr<Impl> impl_;
};

}  // namespace crescent::proxy::testing
