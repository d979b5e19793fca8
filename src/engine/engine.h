// Engine: the serving engine behind `crescent serve`. Requests go in as
// token ids plus SamplingParams; their output comes back incrementally, one
// RequestOutput delta per sequence per step, through a callback.
//
//   auto engine = Engine::Create(options, std::move(model_runner));
//   OutputQueue q;                        // or any OutputCallback
//   RETURN_IF_ERROR((*engine)->Submit(request, q.Callback()));
//   while (auto out = q.Pop()) { ...; if (out->request_finished) break; }
//   (*engine)->Abort(id);                 // e.g. the client went away
//
// A step loop on its own thread runs EngineCore (engine_core.h): each step
// admits newly submitted requests into the running batch (continuous
// batching), computes one forward pass, and hands out the deltas.
//
// Thread safety: every public method may be called from any thread, also
// from inside a callback. Callbacks run on the engine thread, in step order;
// per request they are called in order and never concurrently. A callback
// must return quickly (post the output to the consumer's own queue or event
// loop) because the whole batch waits for it. After a request's
// request_finished delta its callback is never called again and is
// destroyed. Destroying the Engine stops the loop and finishes every
// unfinished request with FinishReason::kAbort.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "engine/engine_types.h"
#include "engine/model_runner.h"

namespace crescent::engine {

using OutputCallback = std::function<void(RequestOutput)>;

class Engine {
 public:
  virtual ~Engine() = default;

  // Starts the step loop. Fails when the options do not fit the model.
  static StatusOr<std::unique_ptr<Engine>> Create(const EngineOptions& options,
                                                  std::unique_ptr<ModelRunner> model);

  // Queues a request; it joins the running batch at the next step. Invalid
  // requests (see EngineCore::ValidateRequest) and duplicate ids of
  // unfinished requests are refused here, before any callback.
  virtual Status Submit(EngineRequest request, OutputCallback on_output) = 0;

  // Aborts a request: its blocks are freed before the next step and its
  // callback gets a final delta with FinishReason::kAbort. Unknown or
  // finished ids are ignored. Returns at once.
  virtual void Abort(const std::string& request_id) = 0;

  // A snapshot taken after the latest step.
  virtual EngineStats Stats() const = 0;

  // Checks a request without submitting it (for early HTTP errors).
  virtual Status Validate(const EngineRequest& request) const = 0;

  virtual const EngineOptions& options() const = 0;
  virtual const ModelRunner& model() const = 0;
};

// A thread-safe queue of outputs for one or more requests, for consumers that
// prefer to block (tests, `crescent generate`).
class OutputQueue {
 public:
  // A callback that pushes into this queue; the queue must outlive the
  // request's last callback.
  OutputCallback Callback();
  // The next output; nullopt after `timeout`.
  std::optional<RequestOutput> Pop(
      std::chrono::milliseconds timeout = std::chrono::seconds(60));

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestOutput> items_;  // guarded by mu_
};

}  // namespace crescent::engine
