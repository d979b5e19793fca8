// A small Prometheus registry: counters, gauges and histograms, optionally
// with labels, rendered in the text exposition format (version 0.0.4) for a
// GET /metrics route.
//
//   auto& reg = metrics::Registry::Default();
//   auto& running = reg.AddGauge("vllm:num_requests_running", "Requests running").Get();
//   auto& ok = reg.AddCounter("crescent_requests_total", "Requests", {"code"}).Get({"200"});
//   auto& ttft = reg.AddHistogram("vllm:time_to_first_token_seconds", "TTFT",
//                                 {0.01, 0.05, 0.1, 0.5, 1}, {"model_name"}).Get({"qwen"});
//   running.Inc(); ok.Inc(); ttft.Observe(0.07);
//   server.Handle(http::Method::kGet, "/metrics", [&](const http::Request&) {
//     auto r = http::Response::Text(200, reg.Render());
//     r.content_type = metrics::kContentType;
//     return r;
//   });
//
// Names follow Prometheus ([a-zA-Z_:][a-zA-Z0-9_:]*, so vLLM's
// "vllm:num_requests_running" is fine); label names [a-zA-Z_][a-zA-Z0-9_]*.
// Names are programmer constants: an invalid one, or one added twice with
// a different type or labels, aborts with a message (a broken invariant).
//
// Cost: Inc/Set/Observe are a few relaxed atomic operations, no lock.
// Family::Get(labels) takes a mutex: look a child up once and keep the
// reference (children live as long as the registry).
//
// Thread safety: everything is thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace crescent::metrics {

class Counter {
 public:
  void Inc(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }  // v >= 0
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Inc(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }
  void Dec(double v = 1.0) { value_.fetch_sub(v, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  // `bounds`: upper bounds of the buckets, strictly increasing; +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (= count)
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket, +Inf last; not cumulative
  std::atomic<double> sum_{0.0};
};

// Default buckets for latencies in seconds (1 ms .. 60 s).
std::vector<double> LatencyBuckets();

// All children of one metric name, one per label-value tuple.
template <typename T>
class Family {
 public:
  // The child for these label values (as many as label names), created on
  // first use. The reference stays valid for the registry's lifetime.
  T& Get(const std::vector<std::string>& label_values = {});

 private:
  friend class Registry;
  Family(std::vector<std::string> label_names, std::vector<double> bounds)
      : label_names_(std::move(label_names)), bounds_(std::move(bounds)) {}
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_;  // guarded by mu_
};

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // The process-wide registry (what `GET /metrics` usually serves).
  static Registry& Default();

  // Adding an existing name with the same type and labels returns it.
  Family<Counter>& AddCounter(const std::string& name, const std::string& help,
                              std::vector<std::string> label_names = {});
  Family<Gauge>& AddGauge(const std::string& name, const std::string& help,
                          std::vector<std::string> label_names = {});
  Family<Histogram>& AddHistogram(const std::string& name, const std::string& help,
                                  std::vector<double> bounds,
                                  std::vector<std::string> label_names = {});
  // A gauge read at scrape time (e.g. KV cache usage). `read` runs in the
  // scraping thread under the registry's lock: keep it quick.
  void AddGaugeCallback(const std::string& name, const std::string& help, std::function<double()> read);

  // Text exposition format, metrics in the order they were added.
  std::string Render() const;

 private:
  struct Entry;
  Entry& AddEntry(const std::string& name, const std::string& help, int type,
                  std::vector<std::string> label_names, std::vector<double> bounds);
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Entry>> entries_;  // guarded by mu_
};

// "text/plain; version=0.0.4; charset=utf-8", the exposition format's type.
inline constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace crescent::metrics
