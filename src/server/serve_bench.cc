// serve_bench: a small load tool for `crescent serve` (or any
// OpenAI-compatible server taking token-id prompts). Three figures, each a
// median of --repeat runs against a reference measured in the same run:
//  - throughput: output tokens/s of --concurrency concurrent completions vs
//    one lone request (same prompt and output lengths, greedy, ignore_eos);
//  - ttft: time to first token of a prompt whose --prefix-len tokens are
//    cached (a previous request sent the same prefix) vs an uncached one of
//    the same length (max_tokens 1, so TTFT = the response time);
//  - connections: --streams concurrent streaming requests, all opened before
//    the first completes; reports how many were open at once and how many
//    finished with [DONE].
//
//   serve_bench --port 8000 --mode throughput|ttft|connections [...]
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/http.h"

namespace crescent {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Bench {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string model;
  int vocab = 151936;
  std::mt19937_64 rng{1};

  std::vector<int32_t> Prompt(int len) {
    std::vector<int32_t> p(len);
    for (auto& t : p) t = static_cast<int32_t>(1000 + rng() % static_cast<uint64_t>(vocab - 1000));
    return p;
  }
  std::string Body(const std::vector<int32_t>& prompt, int max_tokens, bool stream) const {
    nlohmann::json j = {{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0},
                        {"ignore_eos", true}, {"stream", stream}};
    if (!model.empty()) j["model"] = model;
    return j.dump();
  }
  // Completion tokens of one non-streamed request; exits on failure.
  int Complete(http::Client& client, const std::vector<int32_t>& prompt, int max_tokens) const {
    auto r = client.Post("/v1/completions", Body(prompt, max_tokens, false));
    if (!r.ok() || r->status != 200) {
      fmt::print(stderr, "request failed: {}\n", r.ok() ? r->body : r.status().ToString());
      std::exit(1);
    }
    return nlohmann::json::parse(r->body)["usage"]["completion_tokens"].get<int>();
  }
  // Output tokens/s of `prompts` sent at once.
  double Throughput(http::Client& client, int prompt_len, int gen_len, int concurrency) {
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < concurrency; ++i) prompts.push_back(Prompt(prompt_len));
    std::atomic<int64_t> tokens{0};
    const auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int i = 0; i < concurrency; ++i)
      threads.emplace_back([&, i] { tokens += Complete(client, prompts[i], gen_len); });
    for (auto& t : threads) t.join();
    return static_cast<double>(tokens) / Seconds(Clock::now() - start);
  }
};

int Main(int argc, char** argv) {
  CLI::App app{"serve_bench: load figures of an OpenAI-compatible server"};
  Bench b;
  std::string mode = "throughput";
  int concurrency = 16, prompt_len = 32, gen_len = 64, prefix_len = 1000, repeat = 3;
  int streams = 1000, stream_tokens = 16;
  app.add_option("--host", b.host);
  app.add_option("--port", b.port)->required();
  app.add_option("--model", b.model, "model name to send (default: none)");
  app.add_option("--vocab", b.vocab, "token ids are drawn from [1000, vocab)");
  app.add_option("--mode", mode, "throughput | ttft | connections")->required();
  app.add_option("--concurrency", concurrency);
  app.add_option("--prompt-len", prompt_len);
  app.add_option("--gen-len", gen_len);
  app.add_option("--prefix-len", prefix_len);
  app.add_option("--repeat", repeat);
  app.add_option("--streams", streams);
  app.add_option("--stream-tokens", stream_tokens);
  CLI11_PARSE(app, argc, argv);

  http::ClientOptions co;
  co.timeout = std::chrono::minutes(10);
  co.max_idle_connections = 64;
  http::Client client(b.host, static_cast<uint16_t>(b.port), co);
  b.Complete(client, b.Prompt(prompt_len), 4);  // warm-up: page in the weights

  if (mode == "throughput") {
    std::vector<double> lone, conc;
    for (int r = 0; r < repeat; ++r) {
      lone.push_back(b.Throughput(client, prompt_len, gen_len, 1));
      conc.push_back(b.Throughput(client, prompt_len, gen_len, concurrency));
      fmt::print(stderr, "run {}: lone {:.1f} tok/s, {} concurrent {:.1f} tok/s\n", r, lone.back(),
                 concurrency, conc.back());
    }
    const double l = Median(lone), c = Median(conc);
    fmt::print("| lone request, {} prompt + {} output tokens | {:.1f} output tokens/s |\n", prompt_len,
               gen_len, l);
    fmt::print("| {} concurrent requests, same shape | {:.1f} output tokens/s ({:.2f}x lone) |\n",
               concurrency, c, c / l);
  } else if (mode == "ttft") {
    std::vector<double> uncached, cached;
    for (int r = 0; r < repeat; ++r) {
      auto prefix = b.Prompt(prefix_len);
      auto p1 = prefix, p2 = prefix;
      for (int32_t t : b.Prompt(16)) p1.push_back(t);
      for (int32_t t : b.Prompt(16)) p2.push_back(t);
      auto t0 = Clock::now();
      b.Complete(client, p1, 1);
      auto t1 = Clock::now();
      b.Complete(client, p2, 1);
      auto t2 = Clock::now();
      uncached.push_back(Seconds(t1 - t0));
      cached.push_back(Seconds(t2 - t1));
      fmt::print(stderr, "run {}: uncached {:.3f} s, cached {:.3f} s\n", r, uncached.back(), cached.back());
    }
    const double u = Median(uncached), c = Median(cached);
    fmt::print("| TTFT, {} + 16 token prompt, uncached | {:.3f} s |\n", prefix_len, u);
    fmt::print("| TTFT, same length, {}-token prefix cached | {:.3f} s ({:.1f}x faster, {:.2f} of uncached) |\n",
               prefix_len, c, u / c, c / u);
  } else if (mode == "connections") {
    http::StreamClient sc(co, 1);
    std::mutex mu;
    std::condition_variable cv;
    int open = 0, max_open = 0, done = 0, ok = 0, first_done_at_open = -1;
    std::vector<std::shared_ptr<http::StreamHandle>> handles;
    const auto start = Clock::now();
    for (int i = 0; i < streams; ++i) {
      auto saw_done = std::make_shared<bool>(false);
      http::StreamCallbacks cb;
      cb.on_head = [&](int status, const http::Headers&) {
        std::lock_guard<std::mutex> lock(mu);
        max_open = std::max(max_open, ++open);
        return status == 200;
      };
      cb.on_data = [saw_done](std::string_view data) {
        if (data.find("data: [DONE]") != std::string_view::npos) *saw_done = true;
        return true;
      };
      cb.on_done = [&, saw_done](Status s) {
        std::lock_guard<std::mutex> lock(mu);
        if (first_done_at_open < 0) first_done_at_open = open;
        --open;
        ++done;
        if (s.ok() && *saw_done) ++ok;
        cv.notify_all();
      };
      http::ClientRequest req;
      req.method = http::Method::kPost;
      req.target = "/v1/completions";
      req.content_type = "application/json";
      req.body = b.Body(b.Prompt(8), stream_tokens, true);
      handles.push_back(sc.Start(b.host, static_cast<uint16_t>(b.port), std::move(req), std::move(cb)));
    }
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, std::chrono::minutes(5), [&] { return done == streams; });
    fmt::print("| {} concurrent streaming requests ({} tokens each) | {} open at once at most, {} open "
               "when the first finished, {} finished with [DONE], {} failed, {:.1f} s |\n",
               streams, stream_tokens, max_open, first_done_at_open, ok, streams - ok,
               Seconds(Clock::now() - start));
    return ok == streams ? 0 : 1;
  } else {
    fmt::print(stderr, "--mode {}: expected throughput, ttft or connections\n", mode);
    return 2;
  }
  return 0;
}

}  // namespace
}  // namespace crescent

int main(int argc, char** argv) { return crescent::Main(argc, argv); }
