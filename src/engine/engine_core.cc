#include "engine/engine_core.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <limits>

#include "common/logging.h"

namespace crescent::engine {

struct EngineCore::Request {
  std::string id;
  SamplingParams params;
  std::vector<std::unique_ptr<Sequence>> seqs;
  int num_unfinished = 0;
  bool touched = false;
  bool prompt_counted = false;
  Status error;  // why it failed, with FinishReason::kError
};

StatusOr<std::unique_ptr<EngineCore>> EngineCore::Create(const EngineOptions& options,
                                                         ModelRunner* model) {
  const int64_t capacity = static_cast<int64_t>(model->num_blocks()) * model->block_size();
  if (options.max_model_len < 1)
    return InvalidArgumentError(fmt::format("max_model_len must be at least 1, got {}", options.max_model_len));
  if (options.max_model_len > capacity)
    return InvalidArgumentError(fmt::format(
        "max_model_len {} does not fit the KV cache ({} blocks of {} tokens = {} tokens); "
        "lower --max-model-len or give the KV cache more memory",
        options.max_model_len, model->num_blocks(), model->block_size(), capacity));
  if (options.max_num_seqs < 1)
    return InvalidArgumentError(fmt::format("max_num_seqs must be at least 1, got {}", options.max_num_seqs));
  if (options.max_num_batched_tokens < 1)
    return InvalidArgumentError(fmt::format("max_num_batched_tokens must be at least 1, got {}",
                                            options.max_num_batched_tokens));
  if (!options.enable_chunked_prefill && options.max_num_batched_tokens < options.max_model_len)
    return InvalidArgumentError(fmt::format(
        "without chunked prefill max_num_batched_tokens ({}) must be at least max_model_len ({})",
        options.max_num_batched_tokens, options.max_model_len));
  for (int32_t id : options.eos_token_ids) {
    if (id < 0 || id >= model->vocab_size())
      return InvalidArgumentError(fmt::format("eos token id {} is outside the vocabulary [0, {})",
                                              id, model->vocab_size()));
  }
  return std::unique_ptr<EngineCore>(new EngineCore(options, model));
}

EngineCore::EngineCore(const EngineOptions& options, ModelRunner* model)
    : options_(options), model_(model), vocab_size_(model->vocab_size()),
      hash_seed_(HashSeedFromFingerprint(model->fingerprint())),
      seed_rng_(options.seed) {
  BlockManagerOptions bm;
  bm.num_blocks = model->num_blocks();
  bm.block_size = model->block_size();
  bm.enable_prefix_caching = options.enable_prefix_caching;
  blocks_ = std::make_unique<BlockManager>(bm);
  SchedulerOptions so;
  so.max_num_seqs = options.max_num_seqs;
  so.max_num_batched_tokens = options.max_num_batched_tokens;
  so.enable_chunked_prefill = options.enable_chunked_prefill;
  so.hash_seed = hash_seed_;
  scheduler_ = std::make_unique<Scheduler>(so, blocks_.get(), options.kv_connector);
}

// Loads in flight write into blocks of sequences that die with requests_:
// detach and wait for them first.
EngineCore::~EngineCore() { scheduler_->AbandonLoads(); }

Status EngineCore::ValidateRequest(const EngineRequest& request) const {
  if (request.request_id.empty()) return InvalidArgumentError("request_id must not be empty");
  if (request.prompt.empty()) return InvalidArgumentError("the prompt must contain at least one token");
  for (int32_t t : request.prompt) {
    if (t < 0 || t >= vocab_size_)
      return InvalidArgumentError(fmt::format("prompt token id {} is outside the vocabulary [0, {})", t, vocab_size_));
  }
  const int64_t prompt_len = static_cast<int64_t>(request.prompt.size());
  if (prompt_len >= options_.max_model_len)
    return InvalidArgumentError(fmt::format(
        "the prompt has {} tokens but the model's context length is {} (--max-model-len): "
        "shorten the prompt", prompt_len, options_.max_model_len));
  if (prompt_len + request.params.max_tokens > options_.max_model_len)
    return InvalidArgumentError(fmt::format(
        "max_tokens {} plus the prompt's {} tokens exceeds the context length {}: "
        "ask for at most {} tokens", request.params.max_tokens, prompt_len,
        options_.max_model_len, options_.max_model_len - prompt_len));
  RETURN_IF_ERROR(request.params.Validate(vocab_size_));
  if (!request.params.stop.empty() && !options_.detokenizer)
    return FailedPreconditionError("stop strings need a detokenizer; this engine has none");
  return OkStatus();
}

Status EngineCore::AddRequest(EngineRequest request) {
  RETURN_IF_ERROR(ValidateRequest(request));
  if (requests_.count(request.request_id))
    return AlreadyExistsError(fmt::format("request id '{}' is already running; use a unique id",
                                          request.request_id));
  auto req = std::make_unique<Request>();
  req->id = request.request_id;
  req->params = std::move(request.params);
  const uint64_t arrival = next_arrival_++;
  for (int i = 0; i < req->params.n; ++i) {
    auto seq = std::make_unique<Sequence>(req->id, i, arrival, &req->params, request.prompt);
    seq->rng.seed(req->params.seed ? *req->params.seed + static_cast<uint64_t>(i) : seed_rng_());
    if (options_.detokenizer)
      seq->detokenizer = options_.detokenizer(seq->prompt(), request.skip_special_tokens);
    scheduler_->Add(seq.get());
    req->seqs.push_back(std::move(seq));
  }
  req->num_unfinished = req->params.n;
  requests_.emplace(req->id, std::move(req));
  return OkStatus();
}

std::vector<RequestOutput> EngineCore::Abort(const std::string& request_id) {
  std::vector<RequestOutput> outputs;
  auto it = requests_.find(request_id);
  if (it == requests_.end()) return outputs;
  for (auto& seq : it->second->seqs) {
    if (!seq->finish) FinishSeq(seq.get(), FinishReason::kAbort);
  }
  CollectOutputs(&outputs);
  return outputs;
}

void EngineCore::FinishSeq(Sequence* seq, FinishReason reason) {
  seq->finish = reason;
  scheduler_->Remove(seq);
  Request* req = requests_.at(seq->request_id).get();
  --req->num_unfinished;
  if (!req->touched) {
    req->touched = true;
    touched_.push_back(req);
  }
}

void EngineCore::AppendToken(Sequence* seq, const SampleResult& sample) {
  const SamplingParams& p = *seq->params;
  const int32_t token = sample.token;
  seq->tokens.push_back(token);
  seq->pending_tokens.push_back(token);
  if (sample.logprobs) seq->pending_logprobs.push_back(*sample.logprobs);
  ++generation_tokens_total_;
  Request* req = requests_.at(seq->request_id).get();
  if (!req->touched) {
    req->touched = true;
    touched_.push_back(req);
  }

  const int num_out = seq->num_output_tokens();
  std::optional<FinishReason> finish;
  bool stop_token = false;
  if (num_out > p.min_tokens || num_out == p.max_tokens) {
    if (!p.ignore_eos && std::find(options_.eos_token_ids.begin(), options_.eos_token_ids.end(),
                                   token) != options_.eos_token_ids.end()) {
      finish = FinishReason::kStop;
      stop_token = true;
    } else if (std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) !=
               p.stop_token_ids.end()) {
      finish = FinishReason::kStop;
      seq->stop_reason = token;
      stop_token = true;
    }
  }
  // A stop token's text is not part of the output (unless asked for).
  if (seq->detokenizer && (!stop_token || p.include_stop_str_in_output)) {
    std::string delta = seq->detokenizer->Append(token);
    if (!finish) {
      if (auto stop = seq->text.Append(delta)) {
        finish = FinishReason::kStop;
        seq->stop_reason = *stop;
      }
    } else {
      seq->text.Append(delta).reset();
    }
  }
  if (!finish && (num_out >= p.max_tokens ||
                  static_cast<int>(seq->tokens.size()) >= options_.max_model_len)) {
    finish = FinishReason::kLength;
  }
  if (finish) {
    // Flush an incomplete character, unless a stop string cut the text.
    if (seq->detokenizer && !std::holds_alternative<std::string>(seq->stop_reason)) {
      seq->text.Append(seq->detokenizer->Finish()).reset();
    }
    FinishSeq(seq, *finish);
  }
}

RequestOutput EngineCore::TakeDelta(Request* req, Sequence* seq) {
  RequestOutput out;
  out.request_id = req->id;
  out.index = seq->index;
  out.new_tokens = std::move(seq->pending_tokens);
  seq->pending_tokens.clear();
  out.logprobs = std::move(seq->pending_logprobs);
  seq->pending_logprobs.clear();
  out.text = seq->text.TakeDelta(seq->finish.has_value());
  out.finish = seq->finish;
  out.stop_reason = seq->stop_reason;
  out.num_prompt_tokens = seq->num_prompt_tokens;
  out.num_cached_tokens = std::max(0, seq->num_cached_tokens);
  out.num_output_tokens = seq->num_output_tokens();
  return out;
}

void EngineCore::CollectOutputs(std::vector<RequestOutput>* outputs) {
  for (Request* req : touched_) {
    req->touched = false;
    RequestOutput* last = nullptr;
    for (auto& seq : req->seqs) {
      const bool finishing = seq->finish && !seq->finish_reported;
      if (seq->pending_tokens.empty() && !finishing) continue;
      outputs->push_back(TakeDelta(req, seq.get()));
      if (finishing) {
        seq->finish_reported = true;
        if (*seq->finish == FinishReason::kError) outputs->back().error = req->error;
      }
      last = &outputs->back();
    }
    if (last != nullptr && req->num_unfinished == 0) last->request_finished = true;
  }
  // Drop finished requests only after their outputs are built.
  for (Request* req : touched_) {
    if (req->num_unfinished == 0) {
      bool all_reported = true;
      for (auto& seq : req->seqs) all_reported &= seq->finish_reported;
      if (all_reported) requests_.erase(req->id);
    }
  }
  touched_.clear();
}

void EngineCore::FailScheduled(const SchedulerOutput& out, const Status& error,
                               std::vector<RequestOutput>* outputs) {
  spdlog::error("forward pass failed, failing {} sequences: {}", out.seqs.size(), error.ToString());
  for (const ScheduledSeq& s : out.seqs) {
    Request* req = requests_.at(s.seq->request_id).get();
    req->error = error;
    if (!s.seq->finish) FinishSeq(s.seq, FinishReason::kError);
  }
  CollectOutputs(outputs);
}

std::vector<RequestOutput> EngineCore::Step() {
  using Clock = std::chrono::steady_clock;
  const auto step_start = Clock::now();
  struct AddElapsed {
    Clock::time_point start;
    double* total;
    ~AddElapsed() { *total += std::chrono::duration<double>(Clock::now() - start).count(); }
  } step_timer{step_start, &step_seconds_};
  std::vector<RequestOutput> outputs;
  SchedulerOutput out = scheduler_->Schedule();
  last_step_ = StepInfo{};
  last_step_.num_preempted = static_cast<int>(out.preempted.size());
  if (out.empty()) return outputs;
  ++num_steps_;

  std::vector<ForwardSeq> batch;
  batch.reserve(out.seqs.size());
  for (const ScheduledSeq& s : out.seqs) {
    Sequence* seq = s.seq;
    ForwardSeq f;
    f.tokens = std::span<const int32_t>(seq->tokens).subspan(seq->num_computed_tokens, s.num_tokens);
    f.start_position = seq->num_computed_tokens;
    f.block_table = seq->blocks.blocks;
    f.need_logits = seq->num_computed_tokens + s.num_tokens == static_cast<int>(seq->tokens.size());
    batch.push_back(f);
    last_step_.num_tokens += s.num_tokens;
    last_step_.num_prefill_seqs += s.num_tokens > 1 ? 1 : 0;
  }
  last_step_.num_seqs = static_cast<int>(batch.size());
  // Tokens the device can draw (no penalties, no masked ids, no top
  // alternatives asked) come back as ids instead of vocabulary-wide logits;
  // the sequence's generator gives the same one draw the host would take.
  device_samples_.assign(batch.size(), DeviceSample{});
  bool any_device = false;
  if (model_->SupportsDeviceSampling()) {
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!batch[i].need_logits) continue;
      Sequence* seq = out.seqs[i].seq;
      const SamplingParams& p = *seq->params;
      const bool masked = seq->num_output_tokens() < p.min_tokens &&
                          ((!p.ignore_eos && !options_.eos_token_ids.empty()) ||
                           !p.stop_token_ids.empty());
      if (p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f ||
          p.frequency_penalty != 0.0f || masked || (p.logprobs && *p.logprobs > 0)) {
        continue;
      }
      DeviceSample& d = device_samples_[i];
      d = {p.temperature, p.top_k, p.top_p, p.min_p, 0.0, p.logprobs.has_value()};
      if (!p.greedy()) d.uniform = DrawUniform(seq->rng);
      batch[i].sample = &d;
      any_device = true;
    }
  }
  const auto forward_start = Clock::now();
  Status st = any_device ? model_->ForwardSampled(batch, &logits_, &device_sampled_)
                         : model_->Forward(batch, &logits_);
  forward_seconds_ += std::chrono::duration<double>(Clock::now() - forward_start).count();
  if (st.ok() && logits_.size() % vocab_size_ != 0)
    st = InternalError(fmt::format("model returned {} logits, not a multiple of the vocabulary {}",
                                   logits_.size(), vocab_size_));
  if (!st.ok()) {
    FailScheduled(out, st, &outputs);
    return outputs;
  }
  scheduler_->OnStepComputed(out);

  size_t row = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!batch[i].need_logits) continue;
    Sequence* seq = out.seqs[i].seq;
    scheduler_->ReportPrefillDone(seq);
    Request* req = requests_.at(seq->request_id).get();
    if (!req->prompt_counted) {
      req->prompt_counted = true;
      prompt_tokens_total_ += seq->num_prompt_tokens;
    }
    const SamplingParams& p = *seq->params;
    if (batch[i].sample) {
      const DeviceSampled& d = device_sampled_[i];
      SampleResult r;
      r.token = d.token;
      if (p.logprobs) r.logprobs = TokenLogprobs{d.token, d.logprob, d.rank, {}};
      AppendToken(seq, r);
      continue;
    }
    std::span<float> logits(logits_.data() + row * vocab_size_, vocab_size_);
    ++row;
    if (seq->num_output_tokens() < p.min_tokens) {
      // Before min_tokens, EOS and stop ids cannot be drawn (as vLLM).
      constexpr float kNegInf = -std::numeric_limits<float>::infinity();
      if (!p.ignore_eos)
        for (int32_t id : options_.eos_token_ids) logits[id] = kNegInf;
      for (int32_t id : p.stop_token_ids) logits[id] = kNegInf;
    }
    AppendToken(seq, Sample(logits, p, seq->prompt(), seq->output(), seq->rng));
  }
  CollectOutputs(&outputs);
  return outputs;
}

EngineStats EngineCore::Stats() const {
  EngineStats s;
  s.num_running = scheduler_->num_running();
  s.num_waiting = scheduler_->num_waiting() + scheduler_->num_loading();
  s.kv_cache_usage = blocks_->Usage();
  s.num_blocks = blocks_->num_blocks();
  s.num_free_blocks = blocks_->num_free_blocks();
  s.prefix_cache_queries = blocks_->stats().prefix_cache_queries;
  s.prefix_cache_hits = blocks_->stats().prefix_cache_hits;
  s.prompt_tokens_total = prompt_tokens_total_;
  s.generation_tokens_total = generation_tokens_total_;
  s.num_preemptions = scheduler_->stats().num_preemptions;
  s.num_steps = num_steps_;
  s.step_seconds_total = step_seconds_;
  s.forward_seconds_total = forward_seconds_;
  s.kv_connector_loaded_tokens = scheduler_->stats().connector_loaded_tokens;
  s.kv_connector_failed_loads = scheduler_->stats().connector_failed_loads;
  return s;
}

}  // namespace crescent::engine
