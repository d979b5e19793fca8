// `crescent bench`: serving benchmark against an OpenAI-compatible endpoint
// (src/bench/bench.h); `--compare` runs the same workload against a
// colocated instance and a 1P1D cluster that it starts itself.
//
//   crescent bench --base-url http://127.0.0.1:8000 --input-len 256 --output-len 64
//       --num-prompts 100 --request-rate 4 --max-concurrency 16 --json out.json --plot out.svg
//   crescent bench --compare --input-len 512 --output-len 32 --num-prompts 32 --repeat 3
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <limits>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "apps/command.h"
#include "bench/bench.h"
#include "cluster/cluster.h"
#include "cluster/model_cache.h"
#include "common/http.h"

namespace crescent::apps {
namespace {

struct BenchFlags {
  bench::BenchOptions options;
  std::string request_rate = "inf";
  std::vector<std::string> goodput;
  std::string json_path;
  std::string plot_path;
  bool compare = false;
  int repeat = 1;
  std::string shape = "tiny";
  bool no_kv_connector = false;
  int threads = 0;
  std::string kv_cache_memory;  // "" = sized from the model (cluster.h)
  int max_model_len = 4096;
};

Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) return ErrnoToStatus(errno, "cannot write " + path);
  std::fprintf(stderr, "crescent bench: wrote %s\n", path.c_str());
  return OkStatus();
}

// Each figure the median over the runs (runs differ only in their seed).
bench::Summary MedianSummary(const std::vector<bench::Summary>& runs) {
  auto median = [&](auto get) {
    std::vector<double> v;
    for (const auto& s : runs) v.push_back(get(s));
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n == 0 ? 0.0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  };
  bench::Summary m;
#define CRESCENT_MEDIAN(field) m.field = median([](const bench::Summary& s) { return s.field; })
  CRESCENT_MEDIAN(completed);
  CRESCENT_MEDIAN(failed);
  CRESCENT_MEDIAN(duration_s);
  CRESCENT_MEDIAN(total_input_tokens);
  CRESCENT_MEDIAN(total_output_tokens);
  CRESCENT_MEDIAN(request_throughput);
  CRESCENT_MEDIAN(output_throughput);
  CRESCENT_MEDIAN(total_token_throughput);
  CRESCENT_MEDIAN(goodput);
  for (auto member : {&bench::Summary::ttft_ms, &bench::Summary::tpot_ms,
                      &bench::Summary::itl_ms, &bench::Summary::e2el_ms}) {
    (m.*member).mean = median([&](const bench::Summary& s) { return (s.*member).mean; });
    (m.*member).median = median([&](const bench::Summary& s) { return (s.*member).median; });
    (m.*member).p90 = median([&](const bench::Summary& s) { return (s.*member).p90; });
    (m.*member).p99 = median([&](const bench::Summary& s) { return (s.*member).p99; });
  }
#undef CRESCENT_MEDIAN
  return m;
}

// Starts one layout of the comparison.
StatusOr<std::unique_ptr<cluster::Cluster>> StartLayout(const cluster::ClusterOptions& co) {
  std::fprintf(stderr, "crescent bench: starting %s ...\n",
               co.colocated ? "a colocated instance"
                            : fmt::format("{}P{}D", co.prefill, co.decode).c_str());
  return cluster::Cluster::Start(co);
}

// Run `r` of the workload against `c` (seed + r: fresh prompts each run, so
// no prefix-cache hits across runs; the same prompts for every layout).
StatusOr<bench::BenchReport> RunOnce(cluster::Cluster& c, const BenchFlags& f, int r,
                                     const std::atomic<bool>& stop) {
  bench::BenchOptions o = f.options;
  o.base_url = c.base_url();
  o.seed = f.options.seed + r;
  ASSIGN_OR_RETURN(bench::BenchReport report, bench::RunBench(o, &stop));
  RETURN_IF_ERROR(c.CheckAlive());
  return report;
}

// Sum of a counter over its label sets in a Prometheus page; -1 if absent.
double MetricSum(const std::string& page, const std::string& name) {
  double sum = -1;
  size_t pos = 0;
  while ((pos = page.find(name, pos)) != std::string::npos) {
    bool line_start = pos == 0 || page[pos - 1] == '\n';
    size_t end = page.find('\n', pos);
    std::string line = page.substr(pos, end == std::string::npos ? end : end - pos);
    pos += name.size();
    if (!line_start || (line.size() > name.size() && line[name.size()] != ' ' &&
                        line[name.size()] != '{')) {
      continue;
    }
    sum = std::max(sum, 0.0) + std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
  }
  return sum;
}

// What the decode instances' KV connectors did over all runs.
std::string DecodeKvLine(cluster::Cluster& c) {
  double loaded = 0, computed = 0, load_s = 0, loads = 0;
  bool any = false;
  for (const auto& m : c.members()) {
    if (m.role != "decode") continue;
    auto colon = m.address.rfind(':');
    http::Client client(m.address.substr(0, colon),
                        static_cast<uint16_t>(std::stoi(m.address.substr(colon + 1))));
    auto r = client.Get("/metrics");
    if (!r.ok()) continue;
    double l = MetricSum(r->body, "crescent:kv_connector_loaded_tokens_total");
    double k = MetricSum(r->body, "crescent:kv_connector_computed_tokens_total");
    if (l < 0 || k < 0) continue;
    any = true;
    loaded += l;
    computed += k;
    load_s += std::max(0.0, MetricSum(r->body, "crescent:kv_connector_load_seconds_sum"));
    loads += std::max(0.0, MetricSum(r->body, "crescent:kv_connector_load_seconds_count"));
  }
  if (!any) return "";
  return fmt::format("1P1D decode instance: {:.0f} prompt tokens loaded from the store, {:.0f} "
                     "computed ({:.1f}% loaded); {:.0f} loads, {:.1f} ms each on average",
                     loaded, computed, loaded + computed > 0 ? 100 * loaded / (loaded + computed) : 0,
                     loads, loads > 0 ? 1e3 * load_s / loads : 0.0);
}

Status RunCompare(BenchFlags f, const std::atomic<bool>& stop) {
  cluster::ClusterOptions base;
  if (f.options.model.empty()) {
    ASSIGN_OR_RETURN(base.model,
                     cluster::EnsureModel(f.shape, cluster::SelfExe(), cluster::DefaultCacheDir()));
  } else {
    base.model = f.options.model;
    f.options.model.clear();  // the served name is the directory's base name
  }
  base.port = 0;
  base.threads = f.threads;
  base.kv_cache_memory = f.kv_cache_memory;
  base.max_model_len = f.max_model_len;
  base.max_num_seqs = std::max(64, f.options.max_concurrency);
  base.kv_connector = !f.no_kv_connector;
  base.cancel = &stop;

  cluster::ClusterOptions colocated = base;
  colocated.colocated = true;
  cluster::ClusterOptions disaggregated = base;
  disaggregated.prefill = 1;
  disaggregated.decode = 1;

  // Both layouts stay up and the runs alternate, so that a change in the
  // machine's load hits both alike; an idle layout costs next to nothing.
  ASSIGN_OR_RETURN(auto colo_cluster, StartLayout(colocated));
  ASSIGN_OR_RETURN(auto disagg_cluster, StartLayout(disaggregated));
  std::vector<bench::BenchReport> colo, disagg;
  for (int r = 0; r < f.repeat && !stop.load(); ++r) {
    ASSIGN_OR_RETURN(bench::BenchReport a, RunOnce(*colo_cluster, f, r, stop));
    ASSIGN_OR_RETURN(bench::BenchReport b, RunOnce(*disagg_cluster, f, r, stop));
    std::fprintf(stderr,
                 "crescent bench: run %d: output tok/s %.1f vs %.1f, median TTFT %.1f vs %.1f ms, "
                 "median TPOT %.2f vs %.2f ms (colocated vs 1P1D)\n",
                 r + 1, a.summary.output_throughput, b.summary.output_throughput,
                 a.summary.ttft_ms.median, b.summary.ttft_ms.median, a.summary.tpot_ms.median,
                 b.summary.tpot_ms.median);
    colo.push_back(std::move(a));
    disagg.push_back(std::move(b));
  }
  std::string kv_line = DecodeKvLine(*disagg_cluster);
  colo_cluster->Stop();
  disagg_cluster->Stop();
  if (colo.empty() || disagg.empty()) return CancelledError("interrupted");

  std::vector<bench::Summary> a, b;
  for (const auto& r : colo) a.push_back(r.summary);
  for (const auto& r : disagg) b.push_back(r.summary);
  std::string title2 = f.no_kv_connector ? "1P1D (no KV)" : "1P1D";
  int colo_threads = f.threads > 0 ? f.threads : cluster::DefaultThreadsPerInstance(1);
  int disagg_threads = f.threads > 0 ? f.threads : cluster::DefaultThreadsPerInstance(2);
  std::printf("colocated: 1 instance x %d thread(s); %s: prefill + decode x %d thread(s) each, "
              "proxy%s\n",
              colo_threads, title2.c_str(), disagg_threads,
              f.no_kv_connector ? "" : ", master, KV through the store");
  std::printf("%s, %d prompts, %s %d in / %d out tokens, rate %s, concurrency %s; median of %zu "
              "run(s) each\n%s",
              colo[0].model.c_str(), f.options.num_prompts, f.options.dataset.c_str(),
              f.options.input_len, f.options.output_len, f.request_rate.c_str(),
              f.options.max_concurrency > 0 ? std::to_string(f.options.max_concurrency).c_str()
                                            : "unlimited",
              a.size(),
              bench::FormatComparison({{"colocated", MedianSummary(a)},
                                       {title2, MedianSummary(b)}})
                  .c_str());
  if (!kv_line.empty()) std::printf("%s\n", kv_line.c_str());
  std::fflush(stdout);
  if (!f.json_path.empty()) {
    nlohmann::json j;
    for (const auto& r : colo) j["colocated"].push_back(nlohmann::json::parse(r.ToJson()));
    for (const auto& r : disagg) j["1P1D"].push_back(nlohmann::json::parse(r.ToJson()));
    RETURN_IF_ERROR(WriteFile(f.json_path, j.dump(1)));
  }
  if (!f.plot_path.empty()) {
    RETURN_IF_ERROR(WriteFile(
        f.plot_path, bench::LatencyPlotSvg({{"colocated", &colo.back()}, {title2, &disagg.back()}})));
  }
  return OkStatus();
}

Status RunBenchCommand(BenchFlags f) {
  if (f.request_rate == "inf") {
    f.options.request_rate = std::numeric_limits<double>::infinity();
  } else {
    try {
      f.options.request_rate = std::stod(f.request_rate);
    } catch (const std::exception&) {
      f.options.request_rate = -1;
    }
    if (!(f.options.request_rate > 0)) {
      return InvalidArgumentError("--request-rate " + f.request_rate +
                                  ": requests per second > 0, or inf");
    }
  }
  RETURN_IF_ERROR(bench::ParseGoodput(f.goodput, f.options));
  if (f.repeat < 1) return InvalidArgumentError("--repeat must be at least 1");

  // Ctrl-C stops sending; what is in flight finishes and is reported.
  // A second Ctrl-C ends the process at once (children die with it).
  static std::atomic<bool> stop{false};
  signal(SIGINT, [](int) {
    stop = true;
    signal(SIGINT, SIG_DFL);
  });
  signal(SIGPIPE, SIG_IGN);
  if (f.compare) return RunCompare(std::move(f), stop);

  std::vector<bench::BenchReport> reports;
  for (int r = 0; r < f.repeat && !stop.load(); ++r) {
    bench::BenchOptions o = f.options;
    o.seed = f.options.seed + r;
    ASSIGN_OR_RETURN(auto report, bench::RunBench(o, &stop));
    std::printf("%s", bench::FormatSummary(report).c_str());
    reports.push_back(std::move(report));
  }
  if (reports.size() > 1) {
    std::vector<bench::Summary> all;
    for (const auto& r : reports) all.push_back(r.summary);
    std::printf("median of %zu runs:\n%s", reports.size(),
                bench::FormatComparison({{"median", MedianSummary(all)}}).c_str());
  }
  std::fflush(stdout);
  if (!f.json_path.empty()) {
    std::string text = reports.size() == 1 ? reports[0].ToJson() : [&] {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& r : reports) j.push_back(nlohmann::json::parse(r.ToJson()));
      return j.dump(1);
    }();
    RETURN_IF_ERROR(WriteFile(f.json_path, text));
  }
  if (!f.plot_path.empty() && !reports.empty()) {
    std::vector<std::pair<std::string, const bench::BenchReport*>> runs;
    for (size_t i = 0; i < reports.size(); ++i) {
      runs.push_back({reports.size() == 1 ? reports[i].options.base_url
                                          : fmt::format("run {}", i + 1),
                      &reports[i]});
    }
    RETURN_IF_ERROR(WriteFile(f.plot_path, bench::LatencyPlotSvg(runs)));
  }
  for (const auto& r : reports) {
    if (r.summary.completed == 0) {
      return UnavailableError("no request succeeded (see the first failure above)");
    }
  }
  return OkStatus();
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "bench", "Serving benchmark (TTFT, TPOT, ITL, latency, throughput, goodput) of an "
               "OpenAI-compatible endpoint");
  auto f = std::make_shared<BenchFlags>();
  auto& o = f->options;
  cmd->add_option("--base-url", o.base_url, "Endpoint, http://HOST:PORT")->capture_default_str();
  cmd->add_option("--model", o.model,
                  "Model name in requests (default: the first of /v1/models); with --compare "
                  "the model directory (default: the random model of --shape)");
  cmd->add_option("--dataset", o.dataset, "random | sharegpt-like")->capture_default_str();
  cmd->add_option("--input-len", o.input_len, "Prompt tokens (sharegpt-like: the median)")
      ->capture_default_str();
  cmd->add_option("--output-len", o.output_len, "Output tokens (sharegpt-like: the median)")
      ->capture_default_str();
  cmd->add_option("--range-ratio", o.range_ratio,
                  "random: lengths uniform in len*[1-r, 1+r]")->capture_default_str();
  cmd->add_option("--prefix-len", o.prefix_len, "random: tokens every prompt starts with")
      ->capture_default_str();
  cmd->add_option("--num-prompts", o.num_prompts, "Requests to send")->capture_default_str();
  cmd->add_option("--request-rate", f->request_rate,
                  "Requests/s, Poisson arrivals; inf = all at once")->capture_default_str();
  cmd->add_option("--max-concurrency", o.max_concurrency, "Requests in flight at most (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--goodput", f->goodput, "SLOs in ms, e.g. ttft:500 tpot:50 (e2el:MS too)");
  cmd->add_option("--seed", o.seed, "Dataset and arrival seed")->capture_default_str();
  cmd->add_option("--json", f->json_path, "Write the results (summary and per request) here");
  cmd->add_option("--plot", f->plot_path, "Write an SVG of the latency distributions here");
  cmd->add_option("--repeat", f->repeat, "Runs (seeds seed, seed+1, ...); medians reported")
      ->capture_default_str();
  cmd->add_flag("--no-progress", [o = &o](int64_t) { o->progress = false; },
                "No progress bar on stderr");
  cmd->add_option("--io-threads", o.io_threads, "Client io threads")->capture_default_str();
  cmd->add_flag("--compare", f->compare,
                "Run the workload against a colocated instance and a 1P1D cluster, started here");
  cmd->add_option("--shape", f->shape, "--compare: shape of the default random model")
      ->capture_default_str();
  cmd->add_option("--threads", f->threads,
                  "--compare: CPU threads per instance (default: the cores split evenly)");
  cmd->add_option("--kv-cache-memory-bytes", f->kv_cache_memory,
                  "--compare: KV cache per instance (default: sized from the model)");
  cmd->add_option("--max-model-len", f->max_model_len, "--compare: context length")
      ->capture_default_str();
  cmd->add_flag("--no-kv-connector", f->no_kv_connector,
                "--compare: the 1P1D cluster without the KV connector (decode prefills itself)");
  cmd->callback([f] { ExitWith(RunBenchCommand(*f)); });
}

CRESCENT_REGISTER_COMMAND(bench, Setup);

}  // namespace
}  // namespace crescent::apps
