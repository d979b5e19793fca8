// LatencyPlotSvg: four panels (TTFT, TPOT, ITL, E2EL), each the empirical
// CDF of that latency, one coloured curve per run. Plain SVG 1.1 text.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "bench/bench.h"

namespace crescent::bench {
namespace {

constexpr int kPanelW = 420, kPanelH = 280;
constexpr int kMarginL = 60, kMarginR = 20, kMarginT = 40, kMarginB = 45;
constexpr const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                   "#8c564b"};

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

// A "nice" step (1, 2 or 5 x 10^k) giving about `ticks` ticks over `span`.
double NiceStep(double span, int ticks) {
  double raw = span / ticks;
  double mag = std::pow(10, std::floor(std::log10(raw)));
  double norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * mag;
}

std::string Panel(int x0, int y0, const std::string& title,
                  const std::vector<std::pair<std::string, std::vector<double>>>& series) {
  const int w = kPanelW - kMarginL - kMarginR, h = kPanelH - kMarginT - kMarginB;
  const int left = x0 + kMarginL, top = y0 + kMarginT;
  double xmax = 0;
  for (const auto& [name, v] : series) {
    if (!v.empty()) xmax = std::max(xmax, v.back());
  }
  if (xmax <= 0) xmax = 1;
  double step = NiceStep(xmax, 5);
  xmax = std::ceil(xmax / step) * step;
  std::string s = fmt::format(
      "<text x=\"{}\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">{}</text>\n", left,
      y0 + 22, Escape(title));
  s += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n",
      left, top, w, h);
  for (double t = 0; t <= xmax + step / 2; t += step) {
    double x = left + t / xmax * w;
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#ddd\"/>"
                     "<text x=\"{0:.1f}\" y=\"{3}\" font-size=\"10\" text-anchor=\"middle\">{4:g}"
                     "</text>\n",
                     x, top, top + h, top + h + 14, t);
  }
  for (int q = 0; q <= 4; ++q) {
    double y = top + h - q / 4.0 * h;
    s += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#ddd\"/>"
                     "<text x=\"{3}\" y=\"{4:.1f}\" font-size=\"10\" text-anchor=\"end\">{5}"
                     "</text>\n",
                     left, y, left + w, left - 5, y + 3, q * 25);
  }
  s += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">ms</text>\n",
                   left + w / 2, top + h + 32);
  s += fmt::format(
      "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\" "
      "transform=\"rotate(-90 {} {})\">% of samples &#8804; x</text>\n",
      x0 + 18, top + h / 2, x0 + 18, top + h / 2);
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& v = series[k].second;
    if (v.empty()) continue;
    // A step CDF, thinned to at most ~400 points.
    std::string points =
        fmt::format("{:.1f},{:.1f}", left + v.front() / xmax * w, double(top + h));
    size_t stride = std::max<size_t>(1, v.size() / 400);
    for (size_t i = 0; i < v.size(); i += stride) {
      double x = left + v[i] / xmax * w;
      double y = top + h - double(i + 1) / v.size() * h;
      points += fmt::format(" {:.1f},{:.1f}", x, y);
    }
    points += fmt::format(" {:.1f},{:.1f}", left + v.back() / xmax * w, double(top));
    s += fmt::format(
        "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n",
        kColors[k % 6], points);
  }
  return s;
}

}  // namespace

std::string LatencyPlotSvg(const std::vector<std::pair<std::string, const BenchReport*>>& runs) {
  const int width = 2 * kPanelW, legend_h = 30 + 18 * static_cast<int>(runs.size());
  const int height = 2 * kPanelH + legend_h;
  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      width, height);
  auto collect = [](const BenchReport& r, int which) {
    std::vector<double> v;
    for (const RequestResult& q : r.requests) {
      if (!q.success) continue;
      if (which == 0) v.push_back(q.ttft_s * 1e3);
      if (which == 1 && q.output_tokens > 1) v.push_back(q.tpot_s() * 1e3);
      if (which == 2) {
        for (double g : q.itl_s) v.push_back(g * 1e3);
      }
      if (which == 3) v.push_back(q.e2el_s * 1e3);
    }
    std::sort(v.begin(), v.end());
    return v;
  };
  const char* titles[] = {"Time to first token (TTFT)", "Time per output token (TPOT)",
                          "Inter-token latency (ITL)", "End-to-end latency (E2EL)"};
  for (int m = 0; m < 4; ++m) {
    std::vector<std::pair<std::string, std::vector<double>>> series;
    for (const auto& [name, report] : runs) series.push_back({name, collect(*report, m)});
    svg += Panel((m % 2) * kPanelW, (m / 2) * kPanelH, titles[m], series);
  }
  int y = 2 * kPanelH + 20;
  for (size_t k = 0; k < runs.size(); ++k, y += 18) {
    const BenchReport& r = *runs[k].second;
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" stroke-width=\"3\"/>"
        "<text x=\"{4}\" y=\"{5}\" font-size=\"12\">{6}: {7} requests, {8} in / {9} out tokens, "
        "rate {10}, concurrency {11}</text>\n",
        kMarginL, y, kMarginL + 30, kColors[k % 6], kMarginL + 38, y + 4, Escape(runs[k].first),
        r.summary.completed, r.options.input_len, r.options.output_len,
        std::isfinite(r.options.request_rate) ? fmt::format("{:g}/s", r.options.request_rate)
                                              : "inf",
        r.options.max_concurrency > 0 ? std::to_string(r.options.max_concurrency) : "unlimited");
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace crescent::bench
