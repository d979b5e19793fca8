// RunBench: sends the dataset's requests on a schedule through one async
// StreamClient (hundreds of streams on one io thread) and times each SSE
// event as it arrives.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench/bench.h"
#include "bench/dataset.h"
#include "common/config.h"
#include "common/http.h"

namespace crescent::bench {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// "http://127.0.0.1:8000" (a trailing "/" or "/v1" is accepted).
StatusOr<std::pair<std::string, uint16_t>> ParseBaseUrl(std::string url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) {
    return InvalidArgumentError("--base-url " + url + ": expected http://HOST:PORT");
  }
  url = url.substr(scheme.size());
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (url.size() > 3 && url.substr(url.size() - 3) == "/v1") url.resize(url.size() - 3);
  if (url.find('/') != std::string::npos) {
    return InvalidArgumentError("--base-url http://" + url + ": give HOST:PORT without a path");
  }
  auto hp = ParseHostPort(url, "--base-url");
  if (hp.ok() && hp->first == "localhost") hp->first = "127.0.0.1";
  return hp;
}

// One request's progress, touched only by the StreamClient's io thread
// until on_done hands the result over.
struct Stream {
  Clock::time_point sent, last;
  int http_status = 0;
  bool got_first = false;
  bool usage_seen = false;
  int events = 0;
  std::string pending;  // SSE bytes not yet split into events
  std::string error_body;
  RequestResult result;

  void OnEvent(std::string_view payload, Clock::time_point now) {
    if (payload == "[DONE]") return;
    json j = json::parse(payload, nullptr, false);
    if (!j.is_object()) return;
    if (j.contains("error")) {
      result.error = j["error"].is_object() ? j["error"].value("message", j["error"].dump())
                                            : j["error"].dump();
      return;
    }
    if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty()) {
      if (!got_first) {
        result.ttft_s = Seconds(now - sent);
        got_first = true;
      } else {
        result.itl_s.push_back(Seconds(now - last));
      }
      last = now;
      ++events;
    }
    if (j.contains("usage") && j["usage"].is_object()) {
      result.prompt_tokens = j["usage"].value("prompt_tokens", result.prompt_tokens);
      result.output_tokens = j["usage"].value("completion_tokens", 0);
      usage_seen = true;
    }
  }

  bool OnData(std::string_view data) {
    Clock::time_point now = Clock::now();
    if (http_status != 200) {
      if (error_body.size() < 4096) error_body.append(data.substr(0, 4096));
      return true;
    }
    pending.append(data);
    size_t start = 0;
    while (true) {
      size_t end = pending.find("\n\n", start);
      if (end == std::string::npos) break;
      std::string_view event(pending.data() + start, end - start);
      start = end + 2;
      // One "data:" line per event from OpenAI-style servers.
      size_t pos = 0;
      while (pos < event.size()) {
        size_t nl = event.find('\n', pos);
        std::string_view line = event.substr(pos, nl == std::string_view::npos ? nl : nl - pos);
        if (line.rfind("data:", 0) == 0) {
          line.remove_prefix(5);
          if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
          OnEvent(line, now);
        }
        if (nl == std::string_view::npos) break;
        pos = nl + 1;
      }
    }
    pending.erase(0, start);
    return true;
  }

  void Finish(const Status& status) {
    result.e2el_s = Seconds(Clock::now() - sent);
    if (!usage_seen) result.output_tokens = events;
    if (!status.ok()) {
      result.error = status.ToString();
    } else if (http_status != 200) {
      result.error = fmt::format("HTTP {}: {}", http_status, error_body.substr(0, 500));
    } else if (result.error.empty() && !got_first) {
      result.error = "the stream ended without a token";
    }
    result.success = result.error.empty();
  }
};

void PrintProgress(int done, int failed, int total, int running, double elapsed, bool tty) {
  constexpr int kWidth = 30;
  int filled = total > 0 ? done * kWidth / total : kWidth;
  std::string bar(filled, '=');
  if (filled < kWidth) bar += '>' + std::string(kWidth - filled - 1, ' ');
  std::fprintf(stderr, "%s[%s] %d/%d done (%d failed), %d in flight, %.1f s%s",
               tty ? "\r" : "", bar.c_str(), done, total, failed, running, elapsed,
               tty ? "   " : "\n");
  std::fflush(stderr);
}

StatusOr<std::string> DiscoverModel(const std::string& host, uint16_t port) {
  http::ClientOptions co;
  co.timeout = std::chrono::seconds(10);
  http::Client client(host, port, co);
  auto r = client.Get("/v1/models");
  if (!r.ok()) return r.status();
  auto j = json::parse(r->body, nullptr, false);
  if (r->status != 200 || !j.is_object() || !j.contains("data") || j["data"].empty()) {
    return UnavailableError(fmt::format(
        "GET /v1/models on {}:{} gave HTTP {} without a model: pass --model", host, port,
        r->status));
  }
  return j["data"][0].value("id", "");
}

}  // namespace

StatusOr<BenchReport> RunBench(const BenchOptions& o, const std::atomic<bool>* cancel) {
  ASSIGN_OR_RETURN(auto hp, ParseBaseUrl(o.base_url));
  const auto [host, port] = hp;
  ASSIGN_OR_RETURN(std::vector<Prompt> prompts, MakeDataset(o));
  BenchReport report;
  report.options = o;
  report.model = o.model;
  if (report.model.empty()) {
    ASSIGN_OR_RETURN(report.model, DiscoverModel(host, port));
  }
  std::vector<double> arrivals = ArrivalTimes(o.num_prompts, o.request_rate, o.seed);

  http::ClientOptions co;
  co.connect_timeout = std::chrono::seconds(10);
  co.timeout = std::chrono::milliseconds(static_cast<int64_t>(o.request_timeout_s * 1000));
  co.max_idle_connections = 1024;
  http::StreamClient client(co, std::max(1, o.io_threads));

  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0, done = 0, failed = 0;  // guarded by mu
  std::vector<std::shared_ptr<Stream>> streams(prompts.size());
  const int limit = o.max_concurrency > 0 ? o.max_concurrency : o.num_prompts;
  const bool tty = isatty(2) != 0;

  const Clock::time_point start = Clock::now();
  std::atomic<bool> finished{false};
  std::thread progress;
  int last_printed_quarter = -1;  // without a terminal: a line per quarter
  if (o.progress) {
    progress = std::thread([&] {
      while (!finished.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        std::lock_guard<std::mutex> l(mu);
        int quarter = done * 4 / std::max(1, o.num_prompts);
        if (tty || quarter != last_printed_quarter) {
          PrintProgress(done, failed, o.num_prompts, in_flight, Seconds(Clock::now() - start), tty);
          last_printed_quarter = quarter;
        }
      }
    });
  }

  int sent = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (cancel != nullptr && cancel->load()) break;
    std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(
                                              std::chrono::duration<double>(arrivals[i])));
    {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return in_flight < limit; });
      ++in_flight;
    }
    json body = {{"model", report.model},
                 {"max_tokens", prompts[i].output_len},
                 {"temperature", 0},
                 {"ignore_eos", true},
                 {"stream", true},
                 {"stream_options", {{"include_usage", true}}}};
    std::string text = body.dump();
    // The prompt is spliced in as pre-serialised JSON (token id arrays are big).
    text.insert(text.size() - 1, ",\"prompt\":" + prompts[i].prompt_json);
    http::ClientRequest req;
    req.method = http::Method::kPost;
    req.target = "/v1/completions";
    req.content_type = "application/json";
    req.body = std::move(text);

    auto s = std::make_shared<Stream>();
    s->result.prompt_tokens = prompts[i].prompt_len;
    s->sent = Clock::now();
    s->result.start_s = Seconds(s->sent - start);
    streams[i] = s;
    http::StreamCallbacks cb;
    cb.on_head = [s](int status, const http::Headers&) {
      s->http_status = status;
      return true;
    };
    cb.on_data = [s](std::string_view data) { return s->OnData(data); };
    cb.on_done = [s, &mu, &cv, &in_flight, &done, &failed](Status status) {
      s->Finish(status);
      std::lock_guard<std::mutex> l(mu);
      --in_flight;
      ++done;
      if (!s->result.success) ++failed;
      cv.notify_all();
    };
    client.Start(host, port, std::move(req), std::move(cb));
    ++sent;
  }
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return done == sent; });
  }
  const double duration = Seconds(Clock::now() - start);
  finished = true;
  if (progress.joinable()) {
    progress.join();
    std::lock_guard<std::mutex> l(mu);
    if (tty || last_printed_quarter != 4) {
      PrintProgress(done, failed, o.num_prompts, 0, duration, tty);
    }
    if (tty) std::fputc('\n', stderr);
  }
  for (int i = 0; i < sent; ++i) report.requests.push_back(std::move(streams[i]->result));
  report.summary = Summarize(report.requests, duration, o);
  return report;
}

}  // namespace crescent::bench
