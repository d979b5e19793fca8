// crescent_proxy_bench: what the proxy costs, against a direct request to
// the same fake instance measured in the same run.
//
//   crescent_proxy_bench latency [--rounds N] [--serve MODEL_DIR]
//       sequential requests, interleaved: direct to a fake decode instance,
//       through a proxy with that decode instance only, and through a proxy
//       with a fake prefill instance too (the full P->D flow: two hops);
//       prints p50/p90/p99 of each and the proxy's added latency. With
//       --serve, the instances are `crescent serve` processes of that model.
//   crescent_proxy_bench streams [--concurrency C] [--tokens T] [--interval-ms I]
//                                [--seconds S] [--fake-threads K] [--client-threads K]
//                                [--proxy-threads K] [--no-prefill 1]
//       C SSE streams kept open (T tokens each, one every I ms; a finished
//       stream is replaced at once) for S seconds, direct and then through
//       a 1P1D proxy; prints streams done, events/s, time to first event,
//       the largest gap between two events of a stream, and the proxy's CPU
//       use in cores.
//
// Both take --before PATH: another `crescent` binary (e.g. built before a
// change) whose proxy is measured too, in the same run, against the same
// fake instances; and print the CPU use of every process (client, fakes).
//
// Every process (fake instances, `crescent proxy`) is started here on free
// loopback ports; $CRESCENT_BIN or build/apps/crescent is the proxy binary.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <nlohmann/json.hpp>
#include <thread>
#include <signal.h>
#include <unistd.h>
#include <sstream>

#include "common/http.h"
#include "common/testutil.h"

namespace {

using namespace std::chrono_literals;
using crescent::testing::Subprocess;
using Clock = std::chrono::steady_clock;
namespace http = crescent::http;

std::string FakeBin() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  std::string self(buf, n > 0 ? n : 0);
  return self.substr(0, self.rfind('/') + 1) + "crescent_fake_instance";
}

struct Proc {
  uint16_t port = 0;
  std::unique_ptr<Subprocess> proc;
  std::string addr() const { return fmt::format("127.0.0.1:{}", port); }
};

int g_fake_threads = 1;
bool g_no_prefill = false;
// --before PATH: another `crescent` binary whose proxy is measured in the
// same run (e.g. the one from before a change).
std::string g_before_bin;
// --serve DIR (latency): real `crescent serve` instances of that model as the
// prefill and decode instances instead of fakes.
std::string g_serve_model;
int g_proxy_threads = 1;  // --io-threads of the proxy
int g_client_threads = 1;

Proc Fake(std::string name, int interval_ms) {
  Proc p;
  p.port = crescent::testing::FreePort();
  p.proc = std::make_unique<Subprocess>(std::vector<std::string>{
      FakeBin(), "--port", std::to_string(p.port), "--name", name, "--token-interval-ms",
      std::to_string(interval_ms), "--io-threads", std::to_string(g_fake_threads)});
  if (!crescent::testing::WaitForPort(p.port, 10s)) {
    p.proc->DumpLog();
    std::exit(1);
  }
  return p;
}

Proc Proxy(const std::vector<std::string>& prefill, const std::vector<std::string>& decode,
           std::string bin = crescent::testing::CrescentBin()) {
  Proc p;
  p.port = crescent::testing::FreePort();
  std::vector<std::string> argv = {bin, "proxy", "--host", "127.0.0.1",
                                   "--port", std::to_string(p.port), "--io-threads",
                                   std::to_string(g_proxy_threads)};
  if (!prefill.empty()) {
    argv.push_back("--prefill");
    argv.insert(argv.end(), prefill.begin(), prefill.end());
  }
  argv.push_back("--decode");
  argv.insert(argv.end(), decode.begin(), decode.end());
  p.proc = std::make_unique<Subprocess>(argv, std::map<std::string, std::string>{{"CRESCENT_LOG", "warn"}});
  if (!crescent::testing::WaitForPort(p.port, 10s)) {
    p.proc->DumpLog();
    std::exit(1);
  }
  return p;
}

double Pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
}

// CPU seconds (user + system) a process used so far.
double CpuSeconds(pid_t pid) {
  std::ifstream f(fmt::format("/proc/{}/stat", pid));
  std::string s((std::istreambuf_iterator<char>(f)), {});
  size_t close = s.rfind(')');
  std::istringstream in(s.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; in >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) { stime = std::stoull(field); break; }
  }
  return static_cast<double>(utime + stime) / sysconf(_SC_CLK_TCK);
}

// Seconds the threads of a process spent runnable but waiting for a CPU
// (the scheduler's run delay, /proc/PID/task/*/schedstat), so far.
double RunDelaySeconds(pid_t pid) {
  double total = 0;
  std::error_code ec;
  for (const auto& t : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid), ec)) {
    std::ifstream f(t.path() / "schedstat");
    unsigned long long on_cpu = 0, waiting = 0;
    if (f >> on_cpu >> waiting) total += waiting / 1e9;
  }
  return total;
}

Proc Serve(const std::string& model) {
  Proc p;
  p.port = crescent::testing::FreePort();
  p.proc = std::make_unique<Subprocess>(std::vector<std::string>{
      crescent::testing::CrescentBin(), "serve", "--model", model, "--host", "127.0.0.1", "--port",
      std::to_string(p.port), "--threads", "1", "--kv-cache-memory-bytes", "32MiB",
      "--max-model-len", "1024"});
  http::Client c("127.0.0.1", p.port);
  for (int i = 0; i < 400; ++i) {
    auto r = c.Get("/health");
    if (r.ok() && r->status == 200) return p;
    std::this_thread::sleep_for(25ms);
  }
  p.proc->DumpLog();
  std::exit(1);
}

int Latency(int rounds) {
  bool serve = !g_serve_model.empty();
  Proc p = serve ? Serve(g_serve_model) : Fake("p0", 0);
  Proc d = serve ? Serve(g_serve_model) : Fake("d0", 0);
  Proc direct_proxy = Proxy({}, {d.addr()});
  Proc pd_proxy = Proxy({p.addr()}, {d.addr()});
  struct Target {
    std::string name;
    uint16_t port;
    std::unique_ptr<http::Client> client;
    std::vector<double> ms[2];  // non-streamed, streamed
  };
  std::vector<Target> targets;
  targets.push_back({"direct to the decode instance", d.port, nullptr, {}});
  targets.push_back({"proxy, decode only (one hop)", direct_proxy.port, nullptr, {}});
  targets.push_back({"proxy, prefill + decode (two hops)", pd_proxy.port, nullptr, {}});
  std::optional<Proc> before_direct, before_pd;
  if (!g_before_bin.empty()) {
    before_direct = Proxy({}, {d.addr()}, g_before_bin);
    before_pd = Proxy({p.addr()}, {d.addr()}, g_before_bin);
    targets.push_back({"--before proxy, decode only", before_direct->port, nullptr, {}});
    targets.push_back({"--before proxy, prefill + decode", before_pd->port, nullptr, {}});
  }
  for (auto& t : targets) t.client = std::make_unique<http::Client>("127.0.0.1", t.port);
  std::string bodies[2] = {
      R"({"model":"fake-model","prompt":"San Francisco is a city in","max_tokens":16})",
      R"({"model":"fake-model","prompt":"San Francisco is a city in","max_tokens":16,"stream":true})"};
  if (serve) {  // fixture models have no tokenizer: a prompt of token ids, greedy
    bodies[0] = R"({"prompt":[5,6,7,8,9,10,11,12],"max_tokens":16,"temperature":0,"ignore_eos":true})";
    bodies[1] = R"({"prompt":[5,6,7,8,9,10,11,12],"max_tokens":16,"temperature":0,"ignore_eos":true,"stream":true})";
  }
  for (int round = -200; round < rounds; ++round) {  // 200 warm-up rounds
    for (size_t k = 0; k < targets.size(); ++k) {
      auto& t = targets[(k + round + 200) % targets.size()];  // rotate the order
      for (int s = 0; s < 2; ++s) {
        auto t0 = Clock::now();
        auto r = t.client->Post("/v1/completions", bodies[s]);
        double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        if (!r.ok() || r->status != 200) {
          fmt::print(stderr, "{}: {}\n", t.name, r.ok() ? r->body : r.status().ToString());
          return 1;
        }
        if (round >= 0) t.ms[s].push_back(ms);
      }
    }
  }
  fmt::print("{} rounds, sequential, one keep-alive connection per target; instances: {}\n", rounds,
             serve ? "crescent serve " + g_serve_model : std::string("fakes"));
  fmt::print("| path | stream | p50 ms | p90 ms | p99 ms | added p50 ms |\n|---|---|---|---|---|---|\n");
  for (int s = 0; s < 2; ++s) {
    double base = Pct(targets[0].ms[s], 0.5);
    for (auto& t : targets) {
      fmt::print("| {} | {} | {:.3f} | {:.3f} | {:.3f} | {:+.3f} |\n", t.name, s ? "yes" : "no",
                 Pct(t.ms[s], 0.5), Pct(t.ms[s], 0.9), Pct(t.ms[s], 0.99), Pct(t.ms[s], 0.5) - base);
    }
  }
  return 0;
}

struct StreamStats {
  int ok = 0, failed = 0;
  int64_t events = 0;      // of the streams measured
  double window_events_per_s = 0;  // every event received in the measured window
  int64_t all_events = 0;  // of every stream, ramp included
  double seconds = 0;
  std::vector<double> first_ms, max_gap_ms;
  std::string last_error;
};

// Keeps `concurrency` streams open for `duration` (each finished stream is
// replaced at once), opening the first ones over `ramp`. Streams that
// started after the ramp count.
class StreamLoad {
 public:
  StreamLoad(uint16_t port, int concurrency, int tokens, std::chrono::milliseconds ramp,
             std::chrono::milliseconds duration)
      : port_(port), tokens_(tokens) {
    http::ClientOptions co;
    co.max_idle_connections = concurrency + 16;
    co.timeout = 60s;
    sc_ = std::make_unique<http::StreamClient>(co, g_client_threads);
    body_ = fmt::format(
        R"({{"model":"fake-model","prompt":"Tell me a story","max_tokens":{},"stream":true}})", tokens);
    t0_ = Clock::now();
    measure_from_ = t0_ + ramp;
    stop_at_ = t0_ + ramp + duration;
    for (int i = 0; i < concurrency; ++i) {
      std::this_thread::sleep_until(t0_ + ramp * i / concurrency);
      StartOne();
    }
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return open_ == 0; });
    stats_.seconds = std::chrono::duration<double>(Clock::now() - measure_from_).count();
    stats_.window_events_per_s =
        window_events_ / std::chrono::duration<double>(stop_at_ - measure_from_).count();
  }
  StreamStats stats() {
    std::lock_guard lock(mu_);
    return stats_;
  }

 private:
  struct One {
    Clock::time_point start, last;
    double first = -1, max_gap = 0;
    int events = 0;
    int status = 0;
    std::string tail;  // a partial event between two chunks
  };

  void StartOne() {
    {
      std::lock_guard lock(mu_);
      ++open_;
    }
    auto one = std::make_shared<One>();
    one->start = Clock::now();
    http::ClientRequest r{http::Method::kPost, "/v1/completions", body_, "application/json", {}};
    sc_->Start("127.0.0.1", port_, r,
               {[one](int status, const http::Headers&) {
                  one->status = status;
                  return true;
                },
                [this, one](std::string_view d) {
                  auto now = Clock::now();
                  int before = one->events;
                  if (one->first < 0)
                    one->first = std::chrono::duration<double, std::milli>(now - one->start).count();
                  else
                    one->max_gap = std::max(
                        one->max_gap, std::chrono::duration<double, std::milli>(now - one->last).count());
                  one->last = now;
                  one->tail.append(d);
                  size_t pos;
                  while ((pos = one->tail.find("\n\n")) != std::string::npos) {
                    if (one->tail.compare(0, 6, "data: ") == 0 && one->tail.find("\"error\"") > pos)
                      one->events++;
                    one->tail.erase(0, pos + 2);
                  }
                  if (now >= measure_from_ && now < stop_at_) window_events_ += one->events - before;
                  return true;
                },
                [this, one](crescent::Status s) { Done(*one, s); }});
  }

  void Done(const One& one, const crescent::Status& s) {
    bool again;
    {
      std::lock_guard lock(mu_);
      bool counted = one.start >= measure_from_;
      stats_.all_events += one.events;
      if (s.ok() && one.events == tokens_ + 1) {  // T tokens and [DONE], no error event
        if (counted) {
          stats_.ok++;
          stats_.events += one.events;
          stats_.first_ms.push_back(one.first);
          stats_.max_gap_ms.push_back(one.max_gap);
        }
      } else {
        stats_.failed++;
        stats_.last_error = s.ok() ? fmt::format("HTTP {}, {} events: {}", one.status, one.events,
                                                 one.tail.substr(0, 300))
                                   : s.ToString();
      }
      again = Clock::now() < stop_at_;
      if (!again) --open_;
    }
    if (again) {
      {
        std::lock_guard lock(mu_);
        --open_;
      }
      StartOne();
    } else {
      cv_.notify_all();
    }
  }

  const uint16_t port_;
  const int tokens_;
  std::string body_;
  std::unique_ptr<http::StreamClient> sc_;
  Clock::time_point t0_, measure_from_, stop_at_;
  std::mutex mu_;
  std::condition_variable cv_;
  int open_ = 0;  // guarded by mu_
  std::atomic<int64_t> window_events_{0};  // io thread
  StreamStats stats_;  // guarded by mu_
};

int Streams(int concurrency, int tokens, int interval_ms, int seconds) {
  Proc p = Fake("p0", 0);
  Proc d = Fake("d0", interval_ms);
  Proc proxy = g_no_prefill ? Proxy({}, {d.addr()}) : Proxy({p.addr()}, {d.addr()});
  std::optional<Proc> before;
  if (!g_before_bin.empty())
    before = g_no_prefill ? Proxy({}, {d.addr()}, g_before_bin)
                          : Proxy({p.addr()}, {d.addr()}, g_before_bin);
  fmt::print(
      "{} concurrent SSE streams of {} tokens (one every {} ms), kept open for {} s after a 2 s "
      "ramp; proxy {}, {} io thread(s); client {} thread(s), fake decode {} io thread(s); "
      "offered: {:.0f} events/s\n",
      concurrency, tokens, interval_ms, seconds, g_no_prefill ? "decode only" : "1P1D",
      g_proxy_threads, g_client_threads, g_fake_threads, concurrency * 1000.0 / interval_ms);
  fmt::print(
      "| path | streams done | failed | events/s received | first event p50 / p99 ms | largest gap p50 / "
      "p99 ms | proxy CPU (cores) | proxy CPU per event (us) | CPU cores: client / fake decode / "
      "fake prefill |\n|---|---|---|---|---|---|---|---|---|\n");
  for (int pass = 0; pass < (before ? 3 : 2); ++pass) {
    const Proc& measured = pass == 2 ? *before : proxy;
    uint16_t port = pass == 0 ? d.port : measured.port;
    const pid_t pids[4] = {measured.proc->pid(), getpid(), d.proc->pid(), p.proc->pid()};
    double cpu0[4];
    for (int i = 0; i < 4; ++i) cpu0[i] = CpuSeconds(pids[i]);
    double delay0 = RunDelaySeconds(pids[0]);
    auto w0 = Clock::now();
    StreamLoad load(port, concurrency, tokens, 2s, std::chrono::seconds(seconds));
    double wall = std::chrono::duration<double>(Clock::now() - w0).count();
    double cores[4];
    for (int i = 0; i < 4; ++i) cores[i] = (CpuSeconds(pids[i]) - cpu0[i]) / wall;
    double proxy_waiting = (RunDelaySeconds(pids[0]) - delay0) / wall;
    StreamStats st = load.stats();
    fmt::print("| {} | {} | {} | {:.0f} | {:.1f} / {:.1f} | {:.1f} / {:.1f} | {:.2f} | {} | {:.2f} / {:.2f} / {:.2f} |\n",
               pass == 0 ? "direct" : pass == 1 ? "through the proxy" : "through the --before proxy",
               st.ok, st.failed, st.window_events_per_s,
               Pct(st.first_ms, 0.5), Pct(st.first_ms, 0.99), Pct(st.max_gap_ms, 0.5),
               Pct(st.max_gap_ms, 0.99), cores[0],
               pass == 0 ? std::string("-")
                         : fmt::format("{:.1f}", 1e6 * cores[0] * wall / std::max<int64_t>(1, st.all_events)),
               cores[1], cores[2], cores[3]);
    if (pass > 0)
      fmt::print("  proxy threads runnable but waiting for a CPU: {:.2f} s per s\n", proxy_waiting);
    if (st.failed) fmt::print("  last failure: {}\n", st.last_error);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: crescent_proxy_bench latency|streams [flags]\n");
    return 2;
  }
  std::string mode = argv[1];
  int rounds = 2000, concurrency = 2000, tokens = 40, interval = 50, seconds = 10;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--before") {
      g_before_bin = argv[i + 1];
      continue;
    }
    if (k == "--serve") {
      g_serve_model = argv[i + 1];
      continue;
    }
    int v = std::atoi(argv[i + 1]);
    if (k == "--rounds") rounds = v;
    else if (k == "--concurrency") concurrency = v;
    else if (k == "--tokens") tokens = v;
    else if (k == "--interval-ms") interval = v;
    else if (k == "--seconds") seconds = v;
    else if (k == "--fake-threads") g_fake_threads = v;
    else if (k == "--client-threads") g_client_threads = v;
    else if (k == "--no-prefill") g_no_prefill = v != 0;
    else if (k == "--proxy-threads") g_proxy_threads = v;
  }
  signal(SIGPIPE, SIG_IGN);
  if (mode == "latency") return Latency(rounds);
  if (mode == "streams") return Streams(concurrency, tokens, interval, seconds);
  fmt::print(stderr, "unknown mode {}\n", mode);
  return 2;
}
