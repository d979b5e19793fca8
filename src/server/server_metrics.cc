#include "server/server_metrics.h"

namespace crescent::server {
namespace {

// vLLM's buckets.
const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                          0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0,
                                          20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kItlBuckets = {0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2, 0.3, 0.4,
                                         0.5,  0.75,  1.0,  2.5,   5.0,  7.5,  10.0, 20.0,
                                         40.0, 80.0};
const std::vector<double> kE2eBuckets = {0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,
                                         10.0, 15.0, 20.0, 30.0, 40.0,  50.0,  60.0,  120.0,
                                         240.0, 480.0, 960.0, 1920.0, 7680.0};

// Raises a monotonic counter to `target` (engine counters only grow).
void SyncCounter(metrics::Counter* c, double target) {
  const double delta = target - c->value();
  if (delta > 0) c->Inc(delta);
}

}  // namespace

ServerMetrics::ServerMetrics(const engine::Engine* engine, const std::string& model_name)
    : engine_(engine), model_name_(model_name) {
  const std::vector<std::string> label = {"model_name"};
  const std::vector<std::string> value = {model_name};
  auto& r = registry_;
  running_ = &r.AddGauge("vllm:num_requests_running", "Number of requests in model execution batches.", label).Get(value);
  waiting_ = &r.AddGauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", label).Get(value);
  kv_usage_ = &r.AddGauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", label).Get(value);
  prefix_queries_ = &r.AddCounter("vllm:prefix_cache_queries_total",
                                  "Prefix cache queries, in terms of number of queried tokens.", label).Get(value);
  prefix_hits_ = &r.AddCounter("vllm:prefix_cache_hits_total",
                               "Prefix cache hits, in terms of number of cached tokens.", label).Get(value);
  prompt_tokens_ = &r.AddCounter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", label).Get(value);
  generation_tokens_ = &r.AddCounter("vllm:generation_tokens_total", "Number of generation tokens processed.", label).Get(value);
  preemptions_ = &r.AddCounter("vllm:num_preemptions_total", "Cumulative number of preemption from the engine.", label).Get(value);
  success_ = &r.AddCounter("vllm:request_success_total", "Count of successfully processed requests.",
                           {"model_name", "finished_reason"});
  ttft_ = &r.AddHistogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                          kTtftBuckets, label).Get(value);
  itl_ = &r.AddHistogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                         kItlBuckets, label).Get(value);
  e2e_ = &r.AddHistogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                         kE2eBuckets, label).Get(value);
  kv_free_blocks_ = &r.AddGauge("crescent:kv_cache_free_blocks", "KV blocks referenced by no sequence.", label).Get(value);
  kv_blocks_ = &r.AddGauge("crescent:kv_cache_blocks", "KV blocks in the pool.", label).Get(value);
}

void ServerMetrics::CountFinished(const char* finished_reason) {
  success_->Get({model_name_, finished_reason}).Inc();
}

std::string ServerMetrics::Render() {
  {
    std::lock_guard<std::mutex> lock(sync_mu_);
    const engine::EngineStats s = engine_->Stats();
    running_->Set(s.num_running);
    waiting_->Set(s.num_waiting);
    kv_usage_->Set(s.kv_cache_usage);
    kv_free_blocks_->Set(s.num_free_blocks);
    kv_blocks_->Set(s.num_blocks);
    SyncCounter(prefix_queries_, static_cast<double>(s.prefix_cache_queries));
    SyncCounter(prefix_hits_, static_cast<double>(s.prefix_cache_hits));
    SyncCounter(prompt_tokens_, static_cast<double>(s.prompt_tokens_total));
    SyncCounter(generation_tokens_, static_cast<double>(s.generation_tokens_total));
    SyncCounter(preemptions_, static_cast<double>(s.num_preemptions));
  }
  // Plus what other components of the process export (the KV connector).
  return registry_.Render() + metrics::Registry::Default().Render();
}

}  // namespace crescent::server
