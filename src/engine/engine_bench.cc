// engine_bench: serving figures of the engine over a real model, without
// HTTP. Measures, as medians of --repeat runs in one process:
//  - throughput of one lone request vs --concurrency concurrent ones
//    (output tokens/s, greedy, ignore_eos), and the engine's own overhead
//    (step time outside the model's forward pass);
//  - time to first token of a prompt whose --prefix-len tokens are in the
//    prefix cache vs the same-length prompt computed from scratch.
//
//   engine_bench --model DIR | --shape qwen3-0.6b  [--threads 2] [--concurrency 16]
//                [--prompt-len 32] [--gen-len 64] [--prefix-len 1000]
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>

#include "common/logging.h"
#include "engine/backend_runner.h"
#include "engine/engine.h"
#include "model/backend.h"
#include "model/make_model.h"

namespace crescent::engine {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// CPU seconds (user + system) of the whole process so far: on a shared,
// loaded machine this is steadier than wall time.
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
  return tv(u.ru_utime) + tv(u.ru_stime);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

std::vector<int32_t> RandomPrompt(int len, int vocab, std::mt19937_64& rng) {
  std::vector<int32_t> p(len);
  for (auto& t : p) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return p;
}

// A model that costs nothing: fixed pseudo-random logits for every row, so
// the time per step is the engine's own (scheduling, block bookkeeping,
// sampling over the vocabulary, output delivery).
class NullRunner : public ModelRunner {
 public:
  NullRunner(int vocab, int num_blocks) : vocab_(vocab), num_blocks_(num_blocks), row_(vocab) {
    // Normal(0, 3) logits: a peaked, LLM-like distribution.
    std::mt19937_64 rng(3);
    std::normal_distribution<float> normal(0.0f, 3.0f);
    for (float& x : row_) x = normal(rng);
  }
  int vocab_size() const override { return vocab_; }
  int block_size() const override { return 16; }
  int num_blocks() const override { return num_blocks_; }
  std::string fingerprint() const override { return "null"; }
  Status Forward(std::span<const ForwardSeq> batch, std::vector<float>* logits) override {
    logits->clear();
    for (const ForwardSeq& s : batch)
      if (s.need_logits) logits->insert(logits->end(), row_.begin(), row_.end());
    return OkStatus();
  }

 private:
  int vocab_, num_blocks_;
  std::vector<float> row_;
};

struct RunResult {
  double wall = 0;        // submit to last token, seconds
  double cpu = 0;         // process CPU seconds meanwhile
  double ttft = 0;        // mean time to first token
  int64_t output_tokens = 0;
};

// Submits all prompts at once; waits for all to finish.
RunResult RunBatch(Engine& engine, const std::vector<std::vector<int32_t>>& prompts, int gen,
                   const std::string& tag) {
  std::vector<OutputQueue> queues(prompts.size());
  const auto start = Clock::now();
  const double cpu_start = CpuSeconds();
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
  res.cpu = CpuSeconds() - cpu_start;
  return res;
}

int NullModelOverhead(int vocab, int concurrency, int gen_len, int repeat) {
  std::mt19937_64 rng(1);
  fmt::print("| engine alone (zero-cost model, vocab {}) | median of {} |\n|---|---|\n", vocab, repeat);
  for (int conc : {1, concurrency, 128}) {
    for (bool sampled : {false, true}) {
      std::vector<double> per_step_us, cpu_per_step_us;
      for (int r = 0; r < repeat; ++r) {
        EngineOptions eo;
        eo.max_model_len = 4096;
        eo.max_num_seqs = 256;
        auto engine = Engine::Create(eo, std::make_unique<NullRunner>(vocab, 4096 * 4));
        std::vector<OutputQueue> queues(conc);
        const auto start = Clock::now();
        const double cpu_start = CpuSeconds();
        for (int i = 0; i < conc; ++i) {
          EngineRequest req;
          req.request_id = std::to_string(i);
          req.prompt = RandomPrompt(32, vocab, rng);
          req.params.temperature = sampled ? 0.8f : 0.0f;
          req.params.top_p = sampled ? 0.95f : 1.0f;
          req.params.ignore_eos = true;
          req.params.max_tokens = gen_len;
          if (!(*engine)->Submit(std::move(req), queues[i].Callback()).ok()) return 1;
        }
        for (auto& q : queues)
          while (auto out = q.Pop())
            if (out->request_finished) break;
        const double wall = Seconds(Clock::now() - start);
        const double steps = static_cast<double>((*engine)->Stats().num_steps);
        per_step_us.push_back(1e6 * wall / steps);
        cpu_per_step_us.push_back(1e6 * (CpuSeconds() - cpu_start) / steps);
      }
      fmt::print("| {} sequences, {} | {:.0f} us CPU per step ({:.0f} us wall) |\n", conc,
                 sampled ? "temperature 0.8 + top_p 0.95" : "greedy", Median(cpu_per_step_us),
                 Median(per_step_us));
      std::fflush(stdout);
    }
  }
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app{"engine_bench: engine throughput and prefix-cache TTFT over a real model"};
  std::string model_dir;
  int threads = 2, concurrency = 16, prompt_len = 32, gen_len = 64, prefix_len = 1000;
  int repeat = 3, block_size = 16, kv_blocks = 0, max_batched = 2048;
  std::string shape;
  int null_vocab = 0;
  app.add_option("--null-model-vocab", null_vocab,
                 "instead: measure the engine alone over a zero-cost model of this vocabulary");
  auto* model_opt = app.add_option("--model", model_dir, "Hugging Face checkpoint directory");
  app.add_option("--shape", shape, "or: write a random-weight checkpoint of this shape "
                 "(qwen3-0.6b, ...) to a temporary directory and use it")
      ->excludes(model_opt);
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
  if (null_vocab > 0) return NullModelOverhead(null_vocab, concurrency, gen_len, repeat);
  std::filesystem::path made;
  if (model_dir.empty()) {
    if (shape.empty()) {
      fmt::print(stderr, "give --model DIR or --shape NAME\n");
      return 2;
    }
    made = std::filesystem::temp_directory_path() / fmt::format("engine_bench_{}_{}", shape, getpid());
    model::MakeModelOptions mo;
    mo.shape = shape;
    mo.out_dir = made.string();
    Status s = model::MakeModel(mo);
    if (!s.ok()) {
      fmt::print(stderr, "{}\n", s.ToString());
      return 1;
    }
    model_dir = made.string();
  }
  struct RemoveMade {
    std::filesystem::path dir;
    ~RemoveMade() {
      std::error_code ec;
      if (!dir.empty()) std::filesystem::remove_all(dir, ec);
    }
  } remove_made{made};

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
  std::vector<double> lone_cpu_ms, conc_cpu_ms;  // CPU ms per output token
  for (int r = 0; r < repeat; ++r) {
    RunResult lone = RunBatch(engine, {RandomPrompt(prompt_len, vocab, rng)}, gen_len,
                              fmt::format("lone{}", r));
    lone_tps.push_back(static_cast<double>(lone.output_tokens) / lone.wall);
    lone_cpu_ms.push_back(1e3 * lone.cpu / static_cast<double>(lone.output_tokens));

    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < concurrency; ++i) prompts.push_back(RandomPrompt(prompt_len, vocab, rng));
    const EngineStats before = engine.Stats();
    RunResult conc = RunBatch(engine, prompts, gen_len, fmt::format("conc{}", r));
    const EngineStats after = engine.Stats();
    conc_tps.push_back(static_cast<double>(conc.output_tokens) / conc.wall);
    conc_cpu_ms.push_back(1e3 * conc.cpu / static_cast<double>(conc.output_tokens));
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
  std::fflush(stdout);
  fmt::print("| figure | median of {} |\n|---|---|\n", repeat);
  fmt::print("| lone request, {} prompt + {} output tokens | {:.1f} output tokens/s |\n", prompt_len,
             gen_len, lone);
  fmt::print("| {} concurrent requests, same shape | {:.1f} output tokens/s ({:.2f}x lone) |\n",
             concurrency, conc, conc / lone);
  fmt::print("| CPU time per output token: lone / {} concurrent | {:.1f} ms / {:.1f} ms ({:.2f}x less) |\n",
             concurrency, Median(lone_cpu_ms), Median(conc_cpu_ms),
             Median(lone_cpu_ms) / Median(conc_cpu_ms));
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
