#include "common/metrics.h"

#include <gtest/gtest.h>

#include <thread>

#include "common/http.h"

namespace crescent::metrics {
namespace {

TEST(MetricsTest, RendersExpositionFormat) {
  Registry reg;
  auto& running = reg.AddGauge("vllm:num_requests_running", "Number of requests running.").Get();
  running.Set(3);
  auto& reqs = reg.AddCounter("crescent_requests_total", "Requests by code.", {"code", "route"});
  reqs.Get({"200", "/v1/completions"}).Inc(2);
  reqs.Get({"500", "a\"b\\c\nd"}).Inc();
  auto& ttft = reg.AddHistogram("vllm:time_to_first_token_seconds", "TTFT.\nIn seconds.",
                                {0.1, 0.5, 1}, {"model_name"});
  auto& h = ttft.Get({"qwen"});
  h.Observe(0.05);
  h.Observe(0.1);  // le is inclusive
  h.Observe(0.7);
  h.Observe(30);
  reg.AddGaugeCallback("vllm:kv_cache_usage_perc", "KV cache usage.", [] { return 0.25; });

  EXPECT_EQ(reg.Render(),
            "# HELP vllm:num_requests_running Number of requests running.\n"
            "# TYPE vllm:num_requests_running gauge\n"
            "vllm:num_requests_running 3\n"
            "# HELP crescent_requests_total Requests by code.\n"
            "# TYPE crescent_requests_total counter\n"
            "crescent_requests_total{code=\"200\",route=\"/v1/completions\"} 2\n"
            "crescent_requests_total{code=\"500\",route=\"a\\\"b\\\\c\\nd\"} 1\n"
            "# HELP vllm:time_to_first_token_seconds TTFT.\\nIn seconds.\n"
            "# TYPE vllm:time_to_first_token_seconds histogram\n"
            "vllm:time_to_first_token_seconds_bucket{model_name=\"qwen\",le=\"0.1\"} 2\n"
            "vllm:time_to_first_token_seconds_bucket{model_name=\"qwen\",le=\"0.5\"} 2\n"
            "vllm:time_to_first_token_seconds_bucket{model_name=\"qwen\",le=\"1\"} 3\n"
            "vllm:time_to_first_token_seconds_bucket{model_name=\"qwen\",le=\"+Inf\"} 4\n"
            "vllm:time_to_first_token_seconds_sum{model_name=\"qwen\"} 30.85\n"
            "vllm:time_to_first_token_seconds_count{model_name=\"qwen\"} 4\n"
            "# HELP vllm:kv_cache_usage_perc KV cache usage.\n"
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            "vllm:kv_cache_usage_perc 0.25\n");
}

TEST(MetricsTest, SameNameReturnsSameFamily) {
  Registry reg;
  auto& a = reg.AddCounter("x_total", "x");
  auto& b = reg.AddCounter("x_total", "x");
  EXPECT_EQ(&a, &b);
  a.Get().Inc();
  EXPECT_EQ(b.Get().value(), 1);
}

TEST(MetricsTest, ConcurrentIncrementsAreExact) {
  Registry reg;
  auto& c = reg.AddCounter("hits_total", "hits").Get();
  auto& h = reg.AddHistogram("lat_seconds", "lat", LatencyBuckets()).Get();
  auto& g = reg.AddGauge("inflight", "in flight").Get();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100000; ++i) {
        c.Inc();
        h.Observe(0.003);
        g.Inc();
        g.Dec();
      }
    });
  }
  std::thread scraper([&] {
    for (int i = 0; i < 50; ++i) EXPECT_FALSE(reg.Render().empty());
  });
  for (auto& t : threads) t.join();
  scraper.join();
  EXPECT_EQ(c.value(), 400000);
  EXPECT_EQ(h.snapshot().count, 400000u);
  EXPECT_EQ(h.snapshot().cumulative[1], 400000u);  // all in le=0.005
  EXPECT_EQ(g.value(), 0);
}

TEST(MetricsDeathTest, BadNamesAreBrokenInvariants) {
  Registry reg;
  EXPECT_DEATH(reg.AddCounter("1bad", "x"), "invalid metric name '1bad'");
  EXPECT_DEATH(reg.AddCounter("ok", "x", {"bad-label"}), "invalid label name");
  reg.AddCounter("dup", "x");
  EXPECT_DEATH(reg.AddGauge("dup", "x"), "added twice");
  EXPECT_DEATH(reg.AddCounter("l", "x", {"a"}).Get({"1", "2"}), "2 label values given for 1");
}

TEST(MetricsTest, ServedOverHttp) {
  Registry reg;
  reg.AddCounter("served_total", "x").Get().Inc(5);
  http::Server server(http::ServerOptions{});
  server.Handle(http::Method::kGet, "/metrics", [&](const http::Request&) {
    auto r = http::Response::Text(200, reg.Render());
    r.content_type = kContentType;
    return r;
  });
  ASSERT_TRUE(server.Start().ok());
  http::Client c("127.0.0.1", server.port());
  auto r = c.Get("/metrics");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->Header("content-type").value_or(""), kContentType);
  EXPECT_NE(r->body.find("served_total 5\n"), std::string::npos);
}

}  // namespace
}  // namespace crescent::metrics
