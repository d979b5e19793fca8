// Metrics over finished requests, their text and JSON forms.
#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench/bench.h"

namespace crescent::bench {
namespace {

using nlohmann::json;

// Linear interpolation between closest ranks (numpy's default).
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  double rank = p / 100.0 * (sorted.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(rank));
  size_t hi = std::min(sorted.size() - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

json DistributionJson(const Distribution& d) {
  return {{"mean", d.mean}, {"median", d.median}, {"p90", d.p90}, {"p99", d.p99},
          {"std", d.std},   {"min", d.min},       {"max", d.max}};
}

json SummaryJson(const Summary& s) {
  return {{"completed", s.completed},
          {"failed", s.failed},
          {"duration_s", s.duration_s},
          {"total_input_tokens", s.total_input_tokens},
          {"total_output_tokens", s.total_output_tokens},
          {"request_throughput", s.request_throughput},
          {"output_throughput", s.output_throughput},
          {"total_token_throughput", s.total_token_throughput},
          {"goodput", s.goodput < 0 ? json(nullptr) : json(s.goodput)},
          {"ttft_ms", DistributionJson(s.ttft_ms)},
          {"tpot_ms", DistributionJson(s.tpot_ms)},
          {"itl_ms", DistributionJson(s.itl_ms)},
          {"e2el_ms", DistributionJson(s.e2el_ms)}};
}

}  // namespace

double RequestResult::tpot_s() const {
  return output_tokens > 1 ? (e2el_s - ttft_s) / (output_tokens - 1) : 0.0;
}

Status ParseGoodput(const std::vector<std::string>& items, BenchOptions& o) {
  for (const std::string& item : items) {
    size_t colon = item.find(':');
    std::string name = item.substr(0, colon);
    double value = 0;
    try {
      value = colon == std::string::npos ? -1 : std::stod(item.substr(colon + 1));
    } catch (const std::exception&) {
      value = -1;
    }
    if (value <= 0) {
      return InvalidArgumentError(fmt::format(
          "--goodput {}: expected NAME:MS with a positive number of ms, e.g. ttft:500", item));
    }
    if (name == "ttft") o.slo_ttft_ms = value;
    else if (name == "tpot") o.slo_tpot_ms = value;
    else if (name == "e2el") o.slo_e2el_ms = value;
    else return InvalidArgumentError("--goodput " + item + ": unknown metric (ttft, tpot, e2el)");
  }
  return OkStatus();
}

Distribution Describe(std::vector<double> v) {
  Distribution d;
  if (v.empty()) return d;
  std::sort(v.begin(), v.end());
  d.mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
  double var = 0;
  for (double x : v) var += (x - d.mean) * (x - d.mean);
  d.std = std::sqrt(var / v.size());
  d.median = Percentile(v, 50);
  d.p90 = Percentile(v, 90);
  d.p99 = Percentile(v, 99);
  d.min = v.front();
  d.max = v.back();
  return d;
}

Summary Summarize(const std::vector<RequestResult>& requests, double duration_s,
                  const BenchOptions& o) {
  Summary s;
  s.duration_s = duration_s;
  std::vector<double> ttft, tpot, itl, e2el;
  int good = 0;
  bool slo = o.slo_ttft_ms > 0 || o.slo_tpot_ms > 0 || o.slo_e2el_ms > 0;
  for (const RequestResult& r : requests) {
    if (!r.success) {
      ++s.failed;
      continue;
    }
    ++s.completed;
    s.total_input_tokens += r.prompt_tokens;
    s.total_output_tokens += r.output_tokens;
    ttft.push_back(r.ttft_s * 1e3);
    if (r.output_tokens > 1) tpot.push_back(r.tpot_s() * 1e3);
    for (double g : r.itl_s) itl.push_back(g * 1e3);
    e2el.push_back(r.e2el_s * 1e3);
    bool ok = (o.slo_ttft_ms <= 0 || r.ttft_s * 1e3 <= o.slo_ttft_ms) &&
              (o.slo_tpot_ms <= 0 || r.tpot_s() * 1e3 <= o.slo_tpot_ms) &&
              (o.slo_e2el_ms <= 0 || r.e2el_s * 1e3 <= o.slo_e2el_ms);
    if (ok) ++good;
  }
  if (duration_s > 0) {
    s.request_throughput = s.completed / duration_s;
    s.output_throughput = s.total_output_tokens / duration_s;
    s.total_token_throughput = (s.total_input_tokens + s.total_output_tokens) / duration_s;
  }
  s.goodput = slo ? (duration_s > 0 ? good / duration_s : 0) : -1;
  s.ttft_ms = Describe(std::move(ttft));
  s.tpot_ms = Describe(std::move(tpot));
  s.itl_ms = Describe(std::move(itl));
  s.e2el_ms = Describe(std::move(e2el));
  return s;
}

std::string BenchReport::ToJson() const {
  const BenchOptions& o = options;
  json j;
  j["options"] = {{"base_url", o.base_url},
                  {"model", model},
                  {"dataset", o.dataset},
                  {"input_len", o.input_len},
                  {"output_len", o.output_len},
                  {"range_ratio", o.range_ratio},
                  {"prefix_len", o.prefix_len},
                  {"num_prompts", o.num_prompts},
                  {"request_rate", std::isfinite(o.request_rate) ? json(o.request_rate)
                                                                 : json("inf")},
                  {"max_concurrency", o.max_concurrency},
                  {"seed", o.seed},
                  {"goodput_slo_ms",
                   {{"ttft", o.slo_ttft_ms}, {"tpot", o.slo_tpot_ms}, {"e2el", o.slo_e2el_ms}}}};
  j["summary"] = SummaryJson(summary);
  json reqs = json::array();
  for (const RequestResult& r : requests) {
    json e = {{"success", r.success},          {"prompt_tokens", r.prompt_tokens},
              {"output_tokens", r.output_tokens}, {"start_s", r.start_s},
              {"ttft_ms", r.ttft_s * 1e3},     {"tpot_ms", r.tpot_s() * 1e3},
              {"e2el_ms", r.e2el_s * 1e3}};
    json itl = json::array();
    for (double g : r.itl_s) itl.push_back(std::round(g * 1e6) / 1e3);
    e["itl_ms"] = std::move(itl);
    if (!r.success) e["error"] = r.error;
    reqs.push_back(std::move(e));
  }
  j["requests"] = std::move(reqs);
  return j.dump(1);
}

std::string FormatSummary(const BenchReport& r) {
  const Summary& s = r.summary;
  std::string out;
  auto line = [&](const std::string& name, const std::string& value) {
    out += fmt::format("{:<40}{:>12}\n", name, value);
  };
  auto num = [](double v, int digits = 2) { return fmt::format("{:.{}f}", v, digits); };
  out += fmt::format("{:=^52}\n", " Serving Benchmark Result ");
  line("Successful requests:", std::to_string(s.completed));
  line("Failed requests:", std::to_string(s.failed));
  line("Benchmark duration (s):", num(s.duration_s));
  line("Total input tokens:", std::to_string(s.total_input_tokens));
  line("Total generated tokens:", std::to_string(s.total_output_tokens));
  line("Request throughput (req/s):", num(s.request_throughput));
  if (s.goodput >= 0) line("Request goodput (req/s):", num(s.goodput));
  line("Output token throughput (tok/s):", num(s.output_throughput));
  line("Total token throughput (tok/s):", num(s.total_token_throughput));
  auto block = [&](const char* title, const char* name, const Distribution& d) {
    out += fmt::format("{:-^52}\n", std::string(" ") + title + " ");
    line(fmt::format("Mean {} (ms):", name), num(d.mean));
    line(fmt::format("Median {} (ms):", name), num(d.median));
    line(fmt::format("P99 {} (ms):", name), num(d.p99));
  };
  block("Time to First Token", "TTFT", s.ttft_ms);
  block("Time per Output Token (excl. 1st token)", "TPOT", s.tpot_ms);
  block("Inter-token Latency", "ITL", s.itl_ms);
  block("End-to-end Latency", "E2EL", s.e2el_ms);
  out += std::string(52, '=') + "\n";
  for (const RequestResult& req : r.requests) {
    if (!req.success) {
      out += "first failure: " + req.error + "\n";
      break;
    }
  }
  return out;
}

std::string FormatComparison(const std::vector<std::pair<std::string, Summary>>& cols) {
  std::string out = fmt::format("{:<32}", "metric");
  for (const auto& [name, s] : cols) out += fmt::format("{:>16}", name);
  if (cols.size() == 2) out += fmt::format("{:>10}", "ratio");
  out += "\n";
  auto row = [&](const std::string& name, auto get, int digits) {
    out += fmt::format("{:<32}", name);
    for (const auto& [n, s] : cols) out += fmt::format("{:>16.{}f}", get(s), digits);
    if (cols.size() == 2) {
      double a = get(cols[0].second), b = get(cols[1].second);
      out += a != 0 ? fmt::format("{:>9.2f}x", b / a) : fmt::format("{:>10}", "-");
    }
    out += "\n";
  };
  row("successful requests", [](const Summary& s) { return double(s.completed); }, 0);
  row("failed requests", [](const Summary& s) { return double(s.failed); }, 0);
  row("duration (s)", [](const Summary& s) { return s.duration_s; }, 2);
  row("request throughput (req/s)", [](const Summary& s) { return s.request_throughput; }, 2);
  row("output throughput (tok/s)", [](const Summary& s) { return s.output_throughput; }, 1);
  row("total token throughput (tok/s)", [](const Summary& s) { return s.total_token_throughput; },
      1);
  if (!cols.empty() && cols[0].second.goodput >= 0) {
    row("goodput (req/s)", [](const Summary& s) { return s.goodput; }, 2);
  }
  auto dist = [&](const char* name, Distribution Summary::*member) {
    row(fmt::format("{} mean (ms)", name), [member](const Summary& s) { return (s.*member).mean; },
        2);
    row(fmt::format("{} median (ms)", name),
        [member](const Summary& s) { return (s.*member).median; }, 2);
    row(fmt::format("{} p99 (ms)", name), [member](const Summary& s) { return (s.*member).p99; },
        2);
  };
  dist("TTFT", &Summary::ttft_ms);
  dist("TPOT", &Summary::tpot_ms);
  dist("ITL", &Summary::itl_ms);
  dist("E2EL", &Summary::e2el_ms);
  return out;
}

}  // namespace crescent::bench
