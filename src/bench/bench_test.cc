// crescent bench: datasets and arrivals (seeded), statistics, goodput, the
// SVG, and RunBench against a real `crescent serve` (a tiny random model
// with the real vocabulary): every request measured, token counts exact,
// the concurrency cap and the request rate obeyed, failures counted.
#include "bench/bench.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "bench/dataset.h"
#include "common/http.h"
#include "common/testutil.h"

namespace crescent::bench {
namespace {

using namespace std::chrono_literals;
using crescent::testing::CrescentBin;
using crescent::testing::FreePort;
using crescent::testing::Subprocess;
using crescent::testing::TempDir;

TEST(BenchDatasetTest, RandomPromptsHaveExactLengthsASharedPrefixAndRepeatForASeed) {
  BenchOptions o;
  o.num_prompts = 20;
  o.input_len = 50;
  o.output_len = 7;
  o.prefix_len = 10;
  o.seed = 3;
  auto a = MakeDataset(o);
  auto b = MakeDataset(o);
  ASSERT_TRUE(a.ok());
  ASSERT_EQ(a->size(), 20u);
  std::vector<int> first_prefix;
  for (size_t i = 0; i < a->size(); ++i) {
    auto ids = nlohmann::json::parse((*a)[i].prompt_json).get<std::vector<int>>();
    EXPECT_EQ(ids.size(), 60u);
    EXPECT_EQ((*a)[i].prompt_len, 60);
    EXPECT_EQ((*a)[i].output_len, 7);
    EXPECT_EQ((*a)[i].prompt_json, (*b)[i].prompt_json);
    std::vector<int> prefix(ids.begin(), ids.begin() + 10);
    if (i == 0) first_prefix = prefix;
    EXPECT_EQ(prefix, first_prefix);
  }
  EXPECT_NE((*a)[0].prompt_json, (*a)[1].prompt_json);
  o.seed = 4;
  EXPECT_NE(MakeDataset(o)->front().prompt_json, a->front().prompt_json);
}

TEST(BenchDatasetTest, ShareGptLikeLengthsAreLongTailedAndClipped) {
  BenchOptions o;
  o.dataset = "sharegpt-like";
  o.num_prompts = 500;
  o.input_len = 100;
  o.output_len = 50;
  auto d = MakeDataset(o);
  ASSERT_TRUE(d.ok());
  std::vector<int> in;
  for (const Prompt& p : *d) {
    EXPECT_GE(p.prompt_len, 4);
    EXPECT_LE(p.prompt_len, 400);
    EXPECT_GE(p.output_len, 1);
    EXPECT_LE(p.output_len, 200);
    EXPECT_TRUE(nlohmann::json::parse(p.prompt_json).is_string());
    in.push_back(p.prompt_len);
  }
  std::sort(in.begin(), in.end());
  EXPECT_NEAR(in[in.size() / 2], 100, 20);  // the median
  EXPECT_GT(in[in.size() * 95 / 100], 300);  // a long tail
  o.dataset = "nope";
  EXPECT_EQ(MakeDataset(o).status().code(), StatusCode::kInvalidArgument);
}

TEST(BenchDatasetTest, PoissonArrivalsHaveTheRequestedRate) {
  auto t = ArrivalTimes(4000, 50.0, 1);
  ASSERT_EQ(t.size(), 4000u);
  EXPECT_EQ(t[0], 0.0);
  EXPECT_TRUE(std::is_sorted(t.begin(), t.end()));
  EXPECT_NEAR(t.back() / 3999, 1.0 / 50, 0.002);
  for (double x : ArrivalTimes(10, INFINITY, 1)) EXPECT_EQ(x, 0.0);
}

TEST(BenchSummaryTest, DistributionsAndGoodput) {
  Distribution d = Describe({4, 1, 3, 2, 5});
  EXPECT_DOUBLE_EQ(d.mean, 3);
  EXPECT_DOUBLE_EQ(d.median, 3);
  EXPECT_DOUBLE_EQ(d.min, 1);
  EXPECT_DOUBLE_EQ(d.max, 5);
  EXPECT_NEAR(d.p99, 4.96, 1e-9);

  BenchOptions o;
  ASSERT_TRUE(ParseGoodput({"ttft:100", "tpot:10"}, o).ok());
  EXPECT_EQ(o.slo_ttft_ms, 100);
  EXPECT_EQ(o.slo_tpot_ms, 10);
  EXPECT_FALSE(ParseGoodput({"ttft"}, o).ok());
  EXPECT_FALSE(ParseGoodput({"speed:3"}, o).ok());

  // 11 tokens: TPOT = (E2EL - TTFT) / 10.
  RequestResult fast{true, "", 5, 11, 0, 0.050, 0.150, {}};
  RequestResult slow_first{true, "", 5, 11, 0, 0.200, 0.300, {}};
  RequestResult slow_tokens{true, "", 5, 11, 0, 0.050, 0.350, {}};
  RequestResult failed{false, "boom", 5, 0, 0, 0, 0.01, {}};
  EXPECT_NEAR(fast.tpot_s(), 0.010, 1e-12);
  Summary s = Summarize({fast, slow_first, slow_tokens, failed}, 2.0, o);
  EXPECT_EQ(s.completed, 3);
  EXPECT_EQ(s.failed, 1);
  EXPECT_DOUBLE_EQ(s.goodput, 0.5);  // only `fast` meets both SLOs, over 2 s
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(s.output_throughput, 33.0 / 2);
  EXPECT_EQ(Summarize({fast}, 1.0, BenchOptions{}).goodput, -1);  // no SLO given
}

TEST(BenchSummaryTest, PlotHasACurvePerRunAndMetric) {
  BenchReport a, b;
  a.requests = {{true, "", 5, 3, 0, 0.01, 0.03, {0.01, 0.01}}};
  b.requests = {{true, "", 5, 3, 0, 0.02, 0.05, {0.015, 0.015}}};
  a.summary.completed = b.summary.completed = 1;
  std::string svg = LatencyPlotSvg({{"colocated", &a}, {"1P1D <x>", &b}});
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  std::regex polyline("<polyline");
  EXPECT_EQ(std::distance(std::sregex_iterator(svg.begin(), svg.end(), polyline),
                          std::sregex_iterator()),
            8);
  EXPECT_NE(svg.find("1P1D &lt;x&gt;"), std::string::npos);
}

// A real instance of a tiny random model with the real vocabulary (and the
// real tokenizer when scripts/setup fetched it).
class BenchServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    std::string model = dir_->path() + "/tiny";
    Subprocess make({CrescentBin(), "make-model", "--shape", "tiny", "--out", model},
                    {{"CRESCENT_TOKENIZER_DIR",
                      crescent::testing::SourceDir() + "/.cache/tokenizer-qwen3"}});
    if (make.Wait(60s) != 0) {
      setup_error_ = "make-model failed: " + make.Log();
      return;
    }
    port_ = FreePort();
    serve_ = new Subprocess({CrescentBin(), "serve", "--model", model, "--host", "127.0.0.1",
                             "--port", std::to_string(port_), "--threads", "2",
                             "--kv-cache-memory-bytes", "64MiB", "--max-model-len", "1024"});
    http::Client client("127.0.0.1", port_);
    for (int i = 0; i < 400; ++i) {
      auto r = client.Get("/health");
      if (r.ok() && r->status == 200) return;
      std::this_thread::sleep_for(25ms);
    }
    setup_error_ = "crescent serve did not come up: " + serve_->Log();
  }
  static void TearDownTestSuite() {
    delete serve_;
    delete dir_;
  }
  // A failure in SetUpTestSuite would show as "skipped" under ctest.
  void SetUp() override { ASSERT_EQ(setup_error_, ""); }

  BenchOptions Options() {
    BenchOptions o;
    o.base_url = "http://127.0.0.1:" + std::to_string(port_);
    o.progress = false;
    o.input_len = 32;
    o.output_len = 6;
    return o;
  }
  static bool HasTokenizer() { return std::filesystem::exists(dir_->path() + "/tiny/tokenizer.json"); }

  static TempDir* dir_;
  static Subprocess* serve_;
  static uint16_t port_;
  static std::string setup_error_;
};
TempDir* BenchServeTest::dir_ = nullptr;
Subprocess* BenchServeTest::serve_ = nullptr;
uint16_t BenchServeTest::port_ = 0;
std::string BenchServeTest::setup_error_;

TEST_F(BenchServeTest, MeasuresEveryRequestWithinTheConcurrencyCap) {
  BenchOptions o = Options();
  o.num_prompts = 24;
  o.max_concurrency = 3;
  o.range_ratio = 0.5;
  auto report = RunBench(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->model, dir_->path() + "/tiny");  // from /v1/models
  const Summary& s = report->summary;
  EXPECT_EQ(s.completed, 24);
  EXPECT_EQ(s.failed, 0);
  int64_t want_in = 0, want_out = 0;
  auto dataset = MakeDataset(o);
  ASSERT_TRUE(dataset.ok());
  for (const Prompt& p : *dataset) {
    want_in += p.prompt_len;
    want_out += p.output_len;
  }
  EXPECT_EQ(s.total_input_tokens, want_in);  // the server's usage agrees
  EXPECT_EQ(s.total_output_tokens, want_out);
  for (const RequestResult& r : report->requests) {
    EXPECT_GT(r.ttft_s, 0);
    EXPECT_GE(r.e2el_s, r.ttft_s);
    EXPECT_EQ(r.itl_s.size(), static_cast<size_t>(r.output_tokens - 1));
  }
  // Never more than 3 requests overlap.
  std::vector<std::pair<double, int>> edges;
  for (const RequestResult& r : report->requests) {
    edges.push_back({r.start_s, +1});
    edges.push_back({r.start_s + r.e2el_s, -1});
  }
  std::sort(edges.begin(), edges.end());
  int open = 0, most = 0;
  for (auto [t, d] : edges) most = std::max(most, open += d);
  EXPECT_LE(most, 3);
  EXPECT_GT(s.ttft_ms.median, 0);
  EXPECT_GT(s.tpot_ms.median, 0);
  EXPECT_GT(s.output_throughput, 0);
  auto j = nlohmann::json::parse(report->ToJson());
  EXPECT_EQ(j["summary"]["completed"], 24);
  EXPECT_EQ(j["requests"].size(), 24u);
}

TEST_F(BenchServeTest, TextPromptsArriveAtTheRequestRate) {
  if (!HasTokenizer()) GTEST_SKIP() << ".cache/tokenizer-qwen3 missing (run scripts/setup)";
  BenchOptions o = Options();
  o.num_prompts = 20;
  o.request_rate = 40;  // ~0.5 s of arrivals
  o.dataset = "sharegpt-like";
  auto report = RunBench(o);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->summary.completed, 20) << report->requests[0].error;
  double last_start = 0;
  for (const auto& r : report->requests) {
    last_start = std::max(last_start, r.start_s);
    EXPECT_GT(r.prompt_tokens, 4);  // counted by the server's tokenizer
  }
  EXPECT_GT(last_start, 0.2);
  EXPECT_LT(last_start, 2.0);
}

TEST_F(BenchServeTest, CountsFailedRequestsWithTheServersReason) {
  BenchOptions o = Options();
  o.num_prompts = 5;
  o.model = "no-such-model";
  auto report = RunBench(o);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->summary.failed, 5);
  EXPECT_EQ(report->summary.completed, 0);
  EXPECT_NE(report->requests[0].error.find("HTTP 404"), std::string::npos)
      << report->requests[0].error;
}

TEST(BenchUnreachableTest, NamesTheAddress) {
  BenchOptions o;
  o.base_url = "http://127.0.0.1:" + std::to_string(FreePort());
  o.progress = false;
  auto r = RunBench(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cannot reach 127.0.0.1"), std::string::npos)
      << r.status().ToString();
  o.model = "m";
  o.num_prompts = 3;
  auto failed = RunBench(o);
  ASSERT_TRUE(failed.ok());
  EXPECT_EQ(failed->summary.failed, 3);
  o.base_url = "localhost:80";
  EXPECT_EQ(RunBench(o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace crescent::bench
