#include "common/metrics.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace crescent::metrics {
namespace {

enum Type { kCounter, kGauge, kHistogram, kGaugeCallback };
constexpr const char* kTypeNames[] = {"counter", "gauge", "histogram", "gauge"};

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "metrics: %s\n", msg.c_str());
  std::abort();
}

bool ValidName(const std::string& s, bool colon) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = std::isalpha(static_cast<unsigned char>(c)) || c == '_' || (colon && c == ':') ||
              (i > 0 && std::isdigit(static_cast<unsigned char>(c)));
    if (!ok) return false;
  }
  return true;
}

// Prometheus numbers: integers without a fraction, +Inf/-Inf/NaN spelled out.
std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<int64_t>(v));
  return fmt::format("{}", v);
}

std::string EscapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string EscapeHelp(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// {a="x",b="y"} plus an optional extra label (le for buckets).
std::string Labels(const std::vector<std::string>& names, const std::vector<std::string>& values,
                   const std::string& extra = {}) {
  if (names.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out += ',';
    out += fmt::format("{}=\"{}\"", names[i], EscapeLabel(values[i]));
  }
  if (!extra.empty()) out += (names.empty() ? "" : ",") + extra;
  return out + "}";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i + 1 < bounds_.size(); ++i)
    if (!(bounds_[i] < bounds_[i + 1])) Die("histogram bounds must be strictly increasing");
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();  // le: v <= bound
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  uint64_t acc = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    acc += counts_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(acc);
  }
  s.count = acc;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> LatencyBuckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 60.0};
}

template <typename T>
T& Family<T>::Get(const std::vector<std::string>& values) {
  if (values.size() != label_names_.size())
    Die(fmt::format("{} label values given for {} label names", values.size(), label_names_.size()));
  std::lock_guard lock(mu_);
  auto& slot = children_[values];
  if (!slot) {
    if constexpr (std::is_same_v<T, Histogram>) slot = std::make_unique<Histogram>(bounds_);
    else slot = std::make_unique<T>();
  }
  return *slot;
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

struct Registry::Entry {
  std::string name;
  std::string help;
  int type;
  std::vector<std::string> label_names;
  std::vector<double> bounds;
  std::unique_ptr<Family<Counter>> counters;
  std::unique_ptr<Family<Gauge>> gauges;
  std::unique_ptr<Family<Histogram>> histograms;
  std::function<double()> read;
};

Registry::Registry() = default;
Registry::~Registry() = default;

Registry& Registry::Default() {
  static Registry* r = new Registry();  // never destroyed: used until exit
  return *r;
}

Registry::Entry& Registry::AddEntry(const std::string& name, const std::string& help, int type,
                                    std::vector<std::string> label_names, std::vector<double> bounds) {
  if (!ValidName(name, true)) Die(fmt::format("invalid metric name '{}'", name));
  for (const auto& l : label_names)
    if (!ValidName(l, false) || l.starts_with("__") || (type == kHistogram && l == "le"))
      Die(fmt::format("invalid label name '{}' for metric '{}'", l, name));
  for (auto& e : entries_) {
    if (e->name != name) continue;
    if (e->type != type || e->label_names != label_names || e->bounds != bounds || type == kGaugeCallback)
      Die(fmt::format("metric '{}' added twice with a different type, labels or buckets", name));
    return *e;
  }
  auto e = std::make_unique<Entry>();
  e->name = name;
  e->help = help;
  e->type = type;
  e->label_names = label_names;
  e->bounds = bounds;
  if (type == kCounter) e->counters.reset(new Family<Counter>(label_names, {}));
  if (type == kGauge) e->gauges.reset(new Family<Gauge>(label_names, {}));
  if (type == kHistogram) e->histograms.reset(new Family<Histogram>(label_names, bounds));
  entries_.push_back(std::move(e));
  return *entries_.back();
}

Family<Counter>& Registry::AddCounter(const std::string& name, const std::string& help,
                                      std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  return *AddEntry(name, help, kCounter, std::move(label_names), {}).counters;
}

Family<Gauge>& Registry::AddGauge(const std::string& name, const std::string& help,
                                  std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  return *AddEntry(name, help, kGauge, std::move(label_names), {}).gauges;
}

Family<Histogram>& Registry::AddHistogram(const std::string& name, const std::string& help,
                                          std::vector<double> bounds,
                                          std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  return *AddEntry(name, help, kHistogram, std::move(label_names), std::move(bounds)).histograms;
}

void Registry::AddGaugeCallback(const std::string& name, const std::string& help,
                                std::function<double()> read) {
  std::lock_guard lock(mu_);
  AddEntry(name, help, kGaugeCallback, {}, {}).read = std::move(read);
}

std::string Registry::Render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& e : entries_) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", e->name, EscapeHelp(e->help), e->name,
                       kTypeNames[e->type]);
    auto each = [&](auto& family, auto&& fn) {
      std::lock_guard flock(family.mu_);
      for (const auto& [values, child] : family.children_) fn(values, *child);
    };
    switch (e->type) {
      case kCounter:
        each(*e->counters, [&](const auto& v, const Counter& c) {
          out += fmt::format("{}{} {}\n", e->name, Labels(e->label_names, v), Number(c.value()));
        });
        break;
      case kGauge:
        each(*e->gauges, [&](const auto& v, const Gauge& g) {
          out += fmt::format("{}{} {}\n", e->name, Labels(e->label_names, v), Number(g.value()));
        });
        break;
      case kGaugeCallback:
        out += fmt::format("{} {}\n", e->name, Number(e->read()));
        break;
      case kHistogram:
        each(*e->histograms, [&](const auto& v, const Histogram& h) {
          auto s = h.snapshot();
          for (size_t i = 0; i <= s.bounds.size(); ++i) {
            std::string le = i < s.bounds.size() ? Number(s.bounds[i]) : "+Inf";
            out += fmt::format("{}_bucket{} {}\n", e->name,
                               Labels(e->label_names, v, fmt::format("le=\"{}\"", le)), s.cumulative[i]);
          }
          out += fmt::format("{}_sum{} {}\n", e->name, Labels(e->label_names, v), Number(s.sum));
          out += fmt::format("{}_count{} {}\n", e->name, Labels(e->label_names, v), s.count);
        });
        break;
    }
  }
  return out;
}

}  // namespace crescent::metrics
