// Prometheus metrics of `crescent serve` under vLLM's names, labelled
// model_name like vLLM's, so dashboards built for vLLM work unchanged:
//   gauges     vllm:num_requests_running, vllm:num_requests_waiting,
//              vllm:kv_cache_usage_perc
//   counters   vllm:prefix_cache_queries_total, vllm:prefix_cache_hits_total
//              (tokens), vllm:prompt_tokens_total, vllm:generation_tokens_total,
//              vllm:num_preemptions_total, vllm:request_success_total{finished_reason}
//   histograms vllm:time_to_first_token_seconds, vllm:inter_token_latency_seconds,
//              vllm:e2e_request_latency_seconds
// plus crescent:kv_cache_free_blocks / crescent:kv_cache_blocks (the block
// pool, for tests that check that freed blocks came back), and whatever the
// process registers in metrics::Registry::Default() (the KV connector's
// crescent:kv_connector_* metrics).
//
// Engine counters are copied from EngineStats at scrape time (Render());
// latencies are observed by the HTTP layer as requests progress.
//
// Thread safety: everything is thread-safe.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include "common/metrics.h"
#include "engine/engine.h"

namespace crescent::server {

class ServerMetrics {
 public:
  // `engine` must outlive this object.
  ServerMetrics(const engine::Engine* engine, const std::string& model_name);

  void ObserveTimeToFirstToken(double seconds) { ttft_->Observe(seconds); }
  void ObserveInterTokenLatency(double seconds) { itl_->Observe(seconds); }
  void ObserveEndToEnd(double seconds) { e2e_->Observe(seconds); }
  // finished_reason: "stop", "length", "abort", "error".
  void CountFinished(const char* finished_reason);

  // The exposition text (syncs the engine's counters first).
  std::string Render();

 private:
  const engine::Engine* const engine_;
  const std::string model_name_;
  metrics::Registry registry_;
  metrics::Gauge* running_;
  metrics::Gauge* waiting_;
  metrics::Gauge* kv_usage_;
  metrics::Gauge* kv_free_blocks_;
  metrics::Gauge* kv_blocks_;
  metrics::Counter* prefix_queries_;
  metrics::Counter* prefix_hits_;
  metrics::Counter* prompt_tokens_;
  metrics::Counter* generation_tokens_;
  metrics::Counter* preemptions_;
  metrics::Histogram* ttft_;
  metrics::Histogram* itl_;
  metrics::Histogram* e2e_;
  metrics::Family<metrics::Counter>* success_;
  std::mutex sync_mu_;  // serializes Render's counter sync
};

}  // namespace crescent::server
