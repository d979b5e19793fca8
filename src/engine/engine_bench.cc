// engine_bench: serving figures of the engine over a real model, without
// HTTP. Measures, as medians of --repeat runs in one process:
//  - throughput of one lone request vs --concurrency concurrent ones
//    (output tokens/s, greedy, ignore_eos), and the engine's own overhead
//    (step time outside the model's forward pass);
//  - time to first token of a prompt whose --prefix-len tokens are in the
//    prefix cache vs the same-length prompt computed from scratch.
//
//   engine_bench --model DIR [--threads 2] [--concurrency 16]
//                [--prompt-len 32] [--gen-len 64] [--prefix-len 1000]
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "common/logging.h"
#include "engine/backend_runner.h"
#include "engine/engine.h"
#include "model/backend.h"

namespace crescent::engine {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

std::vector<int32_t> RandomPrompt(int len, int vocab, std::mt19937_64& rng) {
  std::vector<int32_t> p(len);
  for (auto& t : p) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return p;
}

struct RunResult {
  double wall = 0;        // submit to last token, seconds
  double ttft = 0;        // mean time to first token
  int64_t output_tokens = 0;
};

// Submits all prompts at once; waits for all to finish.
RunResult RunBatch(Engine& engine, const std::vector<std::vector<int32_t>>& prompts, int gen,
                   const std::string& tag) {
  std::vector<OutputQueue> queues(prompts.size());
  const auto start = Clock::now();
  for (size_t i = 0; i < prompts.size(); ++i) {
    EngineRequest r;
    r.request_id = fmt::format("{}-{}", tag, i);
    r.prompt = prompts[i];
    r.params.temperature = 0;
    r.params.ignore_eos = true;
    r.params.max_tokens = gen;
    Status s = engine.Submit(std::move(r), queues[i].Callback());
    if (!s.ok()) {
      fmt::print(stderr, "submit failed: {}\n", s.ToString());
      std::exit(1);
    }
  }
  RunResult res;
  for (auto& q : queues) {
    bool first = true;
    while (auto out = q.Pop(std::chrono::minutes(10))) {
      if (first && !out->new_tokens.empty()) {
        res.ttft += Seconds(Clock::now() - start) / static_cast<double>(prompts.size());
        first = false;
      }
      res.output_tokens += static_cast<int64_t>(out->new_tokens.size());
      if (out->request_finished) break;
    }
  }
  res.wall = Seconds(Clock::now() - start);
  return res;
}

int Main(int argc, char** argv) {
  CLI::App app{"engine_bench: engine throughput and prefix-cache TTFT over a real model"};
  std::string model_dir;
  int threads = 2, concurrency = 16, prompt_len = 32, gen_len = 64, prefix_len = 1000;
  int repeat = 3, block_size = 16, kv_blocks = 0, max_batched = 2048;
  app.add_option("--model", model_dir, "Hugging Face checkpoint directory")->required();
  app.add_option("--threads", threads, "model compute threads");
  app.add_option("--concurrency", concurrency, "concurrent requests");
  app.add_option("--prompt-len", prompt_len, "prompt tokens of the throughput runs");
  app.add_option("--gen-len", gen_len, "output tokens per request");
  app.add_option("--prefix-len", prefix_len, "cached prefix tokens of the TTFT run");
  app.add_option("--repeat", repeat, "runs per figure (median reported)");
  app.add_option("--block-size", block_size, "KV block size");
  app.add_option("--kv-blocks", kv_blocks, "KV blocks (0: 1 GiB worth)");
  app.add_option("--max-num-batched-tokens", max_batched, "token budget per step");
  CLI11_PARSE(app, argc, argv);
  InitLogging("warn");

  model::BackendOptions bo;
  bo.num_threads = threads;
  bo.kv_block_size = block_size;
  bo.num_kv_blocks = kv_blocks;
  auto backend = model::LoadModel(model_dir, bo);
  if (!backend.ok()) {
    fmt::print(stderr, "{}\n", backend.status().ToString());
    return 1;
  }
  const int vocab = (*backend)->config().vocab_size;
  EngineOptions eo;
  eo.max_model_len = std::max(prefix_len + 64, prompt_len + gen_len + 1);
  eo.max_num_batched_tokens = max_batched;
  eo.max_num_seqs = std::max(256, concurrency);
  auto created = Engine::Create(eo, MakeBackendRunner(std::move(backend).value()));
  if (!created.ok()) {
    fmt::print(stderr, "{}\n", created.status().ToString());
    return 1;
  }
  Engine& engine = **created;
  std::mt19937_64 rng(1);

  // Warm-up (page in the weights).
  RunBatch(engine, {RandomPrompt(prompt_len, vocab, rng)}, 4, "warm");

  std::vector<double> lone_tps, conc_tps, overhead_us, uncached_ttft, cached_ttft;
  for (int r = 0; r < repeat; ++r) {
    RunResult lone = RunBatch(engine, {RandomPrompt(prompt_len, vocab, rng)}, gen_len,
                              fmt::format("lone{}", r));
    lone_tps.push_back(static_cast<double>(lone.output_tokens) / lone.wall);

    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < concurrency; ++i) prompts.push_back(RandomPrompt(prompt_len, vocab, rng));
    const EngineStats before = engine.Stats();
    RunResult conc = RunBatch(engine, prompts, gen_len, fmt::format("conc{}", r));
    const EngineStats after = engine.Stats();
    conc_tps.push_back(static_cast<double>(conc.output_tokens) / conc.wall);
    const double steps = static_cast<double>(after.num_steps - before.num_steps);
    overhead_us.push_back(1e6 *
                          ((after.step_seconds_total - before.step_seconds_total) -
                           (after.forward_seconds_total - before.forward_seconds_total)) /
                          std::max(1.0, steps));

    // TTFT: a fresh prompt of prefix + 16 tokens, then the same prefix with
    // another suffix (the prefix now cached).
    auto prefix = RandomPrompt(prefix_len, vocab, rng);
    auto p1 = prefix, p2 = prefix;
    auto s1 = RandomPrompt(16, vocab, rng), s2 = RandomPrompt(16, vocab, rng);
    p1.insert(p1.end(), s1.begin(), s1.end());
    p2.insert(p2.end(), s2.begin(), s2.end());
    uncached_ttft.push_back(RunBatch(engine, {p1}, 1, fmt::format("u{}", r)).ttft);
    cached_ttft.push_back(RunBatch(engine, {p2}, 1, fmt::format("c{}", r)).ttft);
  }
  const double lone = Median(lone_tps), conc = Median(conc_tps);
  const double u = Median(uncached_ttft), c = Median(cached_ttft);
  fmt::print("| figure | median of {} |\n|---|---|\n", repeat);
  fmt::print("| lone request, {} prompt + {} output tokens | {:.1f} output tokens/s |\n", prompt_len,
             gen_len, lone);
  fmt::print("| {} concurrent requests, same shape | {:.1f} output tokens/s ({:.2f}x lone) |\n",
             concurrency, conc, conc / lone);
  fmt::print("| engine overhead per step (outside forward), {} concurrent | {:.0f} us |\n",
             concurrency, Median(overhead_us));
  fmt::print("| TTFT, {} + 16 token prompt, uncached | {:.3f} s |\n", prefix_len, u);
  fmt::print("| TTFT, same length, {}-token prefix cached | {:.3f} s ({:.1f}x faster) |\n",
             prefix_len, c, u / c);
  const EngineStats st = engine.Stats();
  fmt::print("\nprefix cache: {} queried, {} hit tokens; {} preemptions\n", st.prefix_cache_queries,
             st.prefix_cache_hits, st.num_preemptions);
  return 0;
}

}  // namespace
}  // namespace crescent::engine

int main(int argc, char** argv) { return crescent::engine::Main(argc, argv); }
