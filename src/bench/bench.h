// `crescent bench`: a serving benchmark against any OpenAI-compatible
// endpoint (a crescent proxy or instance, vLLM, ...), after vLLM's
// benchmark_serving: streamed /v1/completions, requests arriving as a
// Poisson process at --request-rate (inf: all at once) with at most
// --max-concurrency in flight.
//
// Per request it measures, as vLLM does:
//   TTFT  time to first token: send -> first SSE event with choices
//   ITL   inter-token latency: the gaps between later events
//   TPOT  time per output token after the first: (E2EL - TTFT) / (out - 1)
//   E2EL  end-to-end latency: send -> end of the stream
// Output tokens are the server's usage.completion_tokens (stream_options
// include_usage), prompt tokens its usage.prompt_tokens.
//
// Datasets (synthetic, seeded, no download):
//   random         prompts of random token ids (exact lengths; ids drawn from
//                  [1000, 30000), valid in Qwen and Llama vocabularies),
//                  lengths uniform in len * [1 - range_ratio, 1 + range_ratio]
//   sharegpt-like  English-word prompts whose lengths follow ShareGPT's
//                  long-tailed shape: log-normal around --input-len /
//                  --output-len (medians), clipped to [4, 4x] and [1, 4x]
// Every request sets ignore_eos, so the output length is the one asked for.
#pragma once

#include <atomic>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/status.h"

namespace crescent::bench {

struct BenchOptions {
  std::string base_url = "http://127.0.0.1:8000";  // scheme://host:port, no path
  std::string model;                 // "" = the first of GET /v1/models
  std::string dataset = "random";    // random | sharegpt-like
  int input_len = 128;               // tokens (median for sharegpt-like)
  int output_len = 64;
  double range_ratio = 0.0;          // random only
  int prefix_len = 0;                // random only: a prefix every prompt shares
  int num_prompts = 100;
  double request_rate = std::numeric_limits<double>::infinity();  // requests/s
  int max_concurrency = 0;           // 0 = unlimited
  uint64_t seed = 0;
  // Goodput SLOs in ms; 0 = none. A request counts toward goodput when it
  // succeeded and meets every SLO given.
  double slo_ttft_ms = 0, slo_tpot_ms = 0, slo_e2el_ms = 0;
  bool progress = true;              // the progress bar on stderr
  int io_threads = 1;                // client threads (hundreds of streams each)
  double request_timeout_s = 600;    // longest silence within one response
};

// Parses "ttft:500 tpot:50 e2el:10000" items into the SLO fields.
Status ParseGoodput(const std::vector<std::string>& items, BenchOptions& options);

struct RequestResult {
  bool success = false;
  std::string error;            // why not, when !success
  int prompt_tokens = 0;        // from usage (the dataset's length if absent)
  int output_tokens = 0;
  double start_s = 0;           // sent, seconds after the benchmark began
  double ttft_s = 0;
  double e2el_s = 0;
  std::vector<double> itl_s;    // gaps between events after the first
  double tpot_s() const;        // 0 with fewer than 2 output tokens
};

// mean, median, p99 and more of one latency, in ms.
struct Distribution {
  double mean = 0, median = 0, p90 = 0, p99 = 0, std = 0, min = 0, max = 0;
};
Distribution Describe(std::vector<double> values_ms);

struct Summary {
  int completed = 0, failed = 0;
  double duration_s = 0;
  int64_t total_input_tokens = 0, total_output_tokens = 0;
  double request_throughput = 0;       // completed requests / s
  double output_throughput = 0;        // output tokens / s
  double total_token_throughput = 0;   // (input + output) tokens / s
  double goodput = 0;                  // requests meeting the SLOs / s (-1: no SLO)
  Distribution ttft_ms, tpot_ms, itl_ms, e2el_ms;
};

struct BenchReport {
  BenchOptions options;
  std::string model;  // the model name the requests used
  std::vector<RequestResult> requests;
  Summary summary;
  std::string ToJson() const;  // options, summary, per-request figures
};

// Runs the benchmark. Fails only when it cannot run (unreachable URL, no
// model, bad options); failed requests are counted in the report.
// `cancel`, when set, stops sending new requests (what was sent finishes).
StatusOr<BenchReport> RunBench(const BenchOptions& options,
                               const std::atomic<bool>* cancel = nullptr);

// Summary of finished requests over `duration_s`.
Summary Summarize(const std::vector<RequestResult>& requests, double duration_s,
                  const BenchOptions& options);

// vLLM-style text block: "Successful requests: 100" ... one metric a line.
std::string FormatSummary(const BenchReport& report);

// Side-by-side table, one column per named report (a --compare run).
std::string FormatComparison(const std::vector<std::pair<std::string, Summary>>& columns);

// An SVG (no dependencies) with the CDFs of TTFT, TPOT, ITL and E2EL, one
// curve per named report.
std::string LatencyPlotSvg(const std::vector<std::pair<std::string, const BenchReport*>>& runs);

}  // namespace crescent::bench
