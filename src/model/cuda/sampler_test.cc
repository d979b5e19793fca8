// The device sampler (sampler.cu) against the engine's host sampler
// (src/engine/sampler.h) on the same logits: greedy identical, plain
// temperature/min_p draws identical for the same uniform (up to float
// rounding at a bucket edge), top_k/top_p draws distributed as the host's
// candidate distribution; then through a real backend and the engine's
// model runner. Skips without a GPU.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "engine/backend_runner.h"
#include "engine/sampler.h"
#include "model/backend.h"
#include "model/cuda/cuda_backend.h"
#include "model/cuda/kernels.h"

namespace crescent::model::cuda {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device in this machine"

// Runs the device sampler over `params` (rows index into `logits`).
std::vector<DeviceSampleResult> SampleOnDevice(const std::vector<float>& logits, int32_t V,
                                               const std::vector<DeviceSampleParams>& params) {
  float* dl = nullptr;
  DeviceSampleParams* dp = nullptr;
  DeviceSampleResult* dr = nullptr;
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&dl), logits.size() * 4), cudaSuccess);
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&dp), params.size() * sizeof(DeviceSampleParams)), cudaSuccess);
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&dr), params.size() * sizeof(DeviceSampleResult)), cudaSuccess);
  cudaMemcpy(dl, logits.data(), logits.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dp, params.data(), params.size() * sizeof(DeviceSampleParams),
             cudaMemcpyHostToDevice);
  EXPECT_EQ(LaunchSample(dl, V, dp, static_cast<int32_t>(params.size()), V, dr, nullptr),
            cudaSuccess);
  std::vector<DeviceSampleResult> out(params.size());
  EXPECT_EQ(cudaMemcpy(out.data(), dr, out.size() * sizeof(DeviceSampleResult),
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  cudaFree(dl);
  cudaFree(dp);
  cudaFree(dr);
  return out;
}

// Logits like a model's: a few strong tokens over a normal background.
std::vector<float> RandomLogits(int rows, int V, uint32_t seed, float spread) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> l(static_cast<size_t>(rows) * V);
  for (float& x : l) x = normal(rng) * spread;
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < 8; ++j) l[static_cast<size_t>(r) * V + rng() % V] += 4.f * spread;
  }
  return l;
}

TEST(CudaSamplerTest, GreedyIsTheHostArgmaxTiesIncluded) {
  SKIP_WITHOUT_GPU();
  for (int V : {1000, 151936}) {
    const int rows = 32;
    std::vector<float> l = RandomLogits(rows, V, 3, 2.f);
    // Ties for the maximum: the lowest id wins on both sides.
    for (int r = 0; r < rows; r += 4) {
      float* row = l.data() + static_cast<size_t>(r) * V;
      const float m = *std::max_element(row, row + V) + 1.f;
      row[V - 1] = row[V / 2] = row[7 * r % V] = m;
    }
    std::vector<DeviceSampleParams> params;
    for (int r = 0; r < rows; ++r) params.push_back({0.f, 1.f, 0.f, 0, 0.5, 1, r});
    auto got = SampleOnDevice(l, V, params);
    for (int r = 0; r < rows; ++r) {
      std::span<const float> row(l.data() + static_cast<size_t>(r) * V, V);
      const int32_t want = engine::Argmax(row);
      EXPECT_EQ(got[r].token, want) << "V " << V << " row " << r;
      const engine::TokenLogprobs lp = engine::ComputeLogprobs(row, want, 0);
      EXPECT_NEAR(got[r].logprob, lp.logprob, 1e-4) << "row " << r;
      EXPECT_EQ(got[r].rank, lp.rank);
    }
  }
}

// Plain temperature (and min_p): both walk the weights in token order, so
// the same uniform picks the same token, except near a token's edge: the
// host sums the weights in float lanes (~1e-4 relative over 150k tokens;
// the device in double), which moves its target a little (measured: 98%
// the same token).
TEST(CudaSamplerTest, TemperatureDrawsMatchTheHostForTheSameUniform) {
  SKIP_WITHOUT_GPU();
  const int V = 151936, rows = 8, draws = 256;
  std::vector<float> l = RandomLogits(rows, V, 5, 1.5f);
  std::mt19937_64 rng(11);
  std::vector<DeviceSampleParams> params;
  std::vector<engine::SamplingParams> host;
  for (int r = 0; r < rows; ++r) {
    for (int d = 0; d < draws; ++d) {
      engine::SamplingParams sp;
      sp.temperature = r % 2 ? 0.7f : 1.3f;
      sp.min_p = r % 4 >= 2 ? 0.02f : 0.f;
      params.push_back({sp.temperature, 1.f, sp.min_p, 0, 0.0, 0, r});
      host.push_back(sp);
    }
  }
  std::vector<uint64_t> seeds(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    seeds[i] = rng();
    engine::SamplerRng draw(seeds[i]);
    params[i].uniform = engine::DrawUniform(draw);
  }
  auto got = SampleOnDevice(l, V, params);
  int same = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    std::vector<float> row(l.begin() + static_cast<size_t>(params[i].row) * V,
                           l.begin() + static_cast<size_t>(params[i].row + 1) * V);
    engine::SamplerRng draw(seeds[i]);  // the same one draw as the device got
    same += engine::Sample(row, host[i], {}, {}, draw).token == got[i].token ? 1 : 0;
  }
  EXPECT_GE(same, static_cast<int>(params.size() * 95 / 100)) << same << " of " << params.size();
}

// top_k / top_p (with temperature and min_p): the device walks the kept
// tokens in id order, the host best first, so compare distributions: the
// same candidates, and evenly spaced uniforms land on each as often as its
// host probability says.
TEST(CudaSamplerTest, TopKTopPDrawsFollowTheHostDistribution) {
  SKIP_WITHOUT_GPU();
  const int V = 4096, draws = 20000;
  std::vector<float> l = RandomLogits(1, V, 9, 2.f);
  struct Case {
    float temperature, top_p, min_p;
    int top_k;
  };
  for (const Case& c : {Case{1.f, 1.f, 0.f, 20}, Case{0.8f, 0.9f, 0.f, 0},
                        Case{1.2f, 0.7f, 0.f, 50}, Case{1.f, 0.95f, 0.05f, 0}}) {
    engine::SamplingParams sp;
    sp.temperature = c.temperature;
    sp.top_p = c.top_p;
    sp.min_p = c.min_p;
    sp.top_k = c.top_k;
    const auto want = engine::CandidateDistribution(l, sp);
    std::map<int32_t, double> p;
    for (const auto& [t, q] : want) p[t] = q;
    std::vector<DeviceSampleParams> params;
    for (int d = 0; d < draws; ++d) {
      params.push_back({c.temperature, c.top_p, c.min_p, c.top_k, (d + 0.5) / draws, 0, 0});
    }
    auto got = SampleOnDevice(l, V, params);
    std::map<int32_t, double> f;
    for (const auto& r : got) {
      EXPECT_TRUE(p.count(r.token)) << "token " << r.token << " is outside the host's candidates";
      f[r.token] += 1.0 / draws;
    }
    // Evenly spaced draws give each token floor or ceil of p x draws.
    double worst = 0;
    for (const auto& [t, q] : p) worst = std::max(worst, std::abs(q - f[t]));
    EXPECT_LE(worst, 2.0 / draws) << "top_k " << c.top_k << " top_p " << c.top_p << ": "
                                  << want.size() << " candidates";
  }
}

// Through the backend and the engine's runner: greedy tokens drawn on the
// device equal the argmax of the logits the same runner returns.
TEST(CudaSamplerTest, RunnerSamplesOnTheDeviceAsTheLogitsSay) {
  SKIP_WITHOUT_GPU();
  BackendOptions o;
  o.backend = "cuda";
  o.num_kv_blocks = 64;
  auto loaded = LoadModel("tests/data/models/tiny-qwen3", o);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  auto runner = engine::MakeBackendRunner(std::move(loaded).value());
  ASSERT_TRUE(runner->SupportsDeviceSampling());
  std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, b = {11, 12, 13};
  std::vector<int32_t> ta = {0, 1}, tb = {2};
  const int V = runner->vocab_size();
  engine::DeviceSample greedy;
  std::vector<engine::ForwardSeq> batch(2);
  batch[0] = {a, 0, ta, true};
  batch[1] = {b, 0, tb, true};
  std::vector<float> logits;
  ASSERT_TRUE(runner->Forward(batch, &logits).ok());
  ASSERT_EQ(logits.size(), 2u * V);
  batch[1].sample = &greedy;  // the same batch again (same KV), sequence 1 on the device
  std::vector<float> host_rows;
  std::vector<engine::DeviceSampled> sampled;
  Status st = runner->ForwardSampled(batch, &host_rows, &sampled);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(host_rows, std::vector<float>(logits.begin(), logits.begin() + V));
  ASSERT_EQ(sampled.size(), 2u);
  EXPECT_EQ(sampled[0].token, -1);
  EXPECT_EQ(sampled[1].token, engine::Argmax(std::span<const float>(logits).subspan(V, V)));
}

}  // namespace
}  // namespace crescent::model::cuda
