// EngineCore: the single-threaded heart of the engine. Owns the requests,
// the block manager and the scheduler; each Step() schedules a batch, runs
// the model once, samples, checks stop conditions and returns the outputs
// produced. Engine (engine.h) runs it on its own thread; tests drive it
// directly, step by step.
//
// Thread safety: none, except ValidateRequest (const, touches only options).
#pragma once

#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "engine/block_manager.h"
#include "engine/engine_types.h"
#include "engine/model_runner.h"
#include "engine/scheduler.h"

namespace crescent::engine {

class EngineCore {
 public:
  // `model` is not owned and must outlive the core. Fails when the options
  // do not fit the model (max_model_len beyond the KV pool, ...).
  static StatusOr<std::unique_ptr<EngineCore>> Create(const EngineOptions& options,
                                                      ModelRunner* model);
  ~EngineCore();

  // Checks a request against the model and the options, without queuing it
  // (unknown token ids, prompt plus max_tokens beyond max_model_len, bad
  // sampling parameters). Thread-safe.
  Status ValidateRequest(const EngineRequest& request) const;

  // Validates and queues a request (its n sequences join the waiting queue).
  Status AddRequest(EngineRequest request);

  // Finishes every sequence of the request with kAbort and frees its blocks.
  // Returns the final outputs; empty when the request is unknown (finished).
  std::vector<RequestOutput> Abort(const std::string& request_id);

  // One scheduling step and forward pass. Returns the deltas produced.
  std::vector<RequestOutput> Step();

  // Requests not finished, or KV connector loads still in flight (of
  // aborted requests too: Step frees their blocks once they end).
  bool HasUnfinishedRequests() const {
    return !requests_.empty() || scheduler_->num_loading() > 0;
  }
  bool HasRequest(const std::string& request_id) const {
    return requests_.count(request_id) != 0;
  }
  EngineStats Stats() const;

  const EngineOptions& options() const { return options_; }
  // For tests.
  const BlockManager& block_manager() const { return *blocks_; }
  struct StepInfo {
    int num_seqs = 0;        // sequences computed
    int num_tokens = 0;      // tokens computed
    int num_prefill_seqs = 0;  // of which computed more than one token
    int num_preempted = 0;
  };
  const StepInfo& last_step() const { return last_step_; }

 private:
  struct Request;

  EngineCore(const EngineOptions& options, ModelRunner* model);
  // Appends a sampled token and checks the stop conditions.
  void AppendToken(Sequence* seq, const SampleResult& sample);
  void FinishSeq(Sequence* seq, FinishReason reason);
  void CollectOutputs(std::vector<RequestOutput>* outputs);
  RequestOutput TakeDelta(Request* request, Sequence* seq);
  void FailScheduled(const SchedulerOutput& out, const Status& error,
                     std::vector<RequestOutput>* outputs);

  // Constant after construction.
  const EngineOptions options_;
  ModelRunner* const model_;
  const int vocab_size_;
  const uint64_t hash_seed_;

  std::unique_ptr<BlockManager> blocks_;
  std::unique_ptr<Scheduler> scheduler_;
  std::map<std::string, std::unique_ptr<Request>> requests_;
  std::vector<Request*> touched_;  // requests with outputs pending this step
  uint64_t next_arrival_ = 0;
  std::mt19937_64 seed_rng_;
  StepInfo last_step_;
  std::vector<float> logits_;      // [rows][vocab], reused between steps
  std::vector<DeviceSample> device_samples_;   // [batch]: ForwardSeq::sample targets
  std::vector<DeviceSampled> device_sampled_;  // [batch]: tokens drawn on the device
  uint64_t prompt_tokens_total_ = 0;
  uint64_t generation_tokens_total_ = 0;
  uint64_t num_steps_ = 0;
  double step_seconds_ = 0.0;
  double forward_seconds_ = 0.0;
};

}  // namespace crescent::engine
