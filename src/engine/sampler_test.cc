#include "engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <random>

namespace crescent::engine {
namespace {

std::vector<float> RandomLogits(int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> l(vocab);
  for (float& x : l) x = d(rng);
  return l;
}

int32_t Draw(std::vector<float> logits, const SamplingParams& p, SamplerRng& rng,
             std::span<const int32_t> prompt = {}, std::span<const int32_t> output = {}) {
  return Sample(logits, p, prompt, output, rng).token;
}

TEST(SamplerTest, TopKOneEqualsGreedy) {
  for (uint64_t seed = 0; seed < 50; ++seed) {
    auto logits = RandomLogits(100, seed);
    SamplingParams greedy;
    greedy.temperature = 0;
    SamplingParams topk1;
    topk1.temperature = 1.5f;
    topk1.top_k = 1;
    SamplerRng rng(seed);
    EXPECT_EQ(Draw(logits, greedy, rng), Argmax(logits));
    EXPECT_EQ(Draw(logits, topk1, rng), Argmax(logits));
  }
}

TEST(SamplerTest, SeededSamplingIsReproducibleAndSeedsDiffer) {
  auto logits = RandomLogits(50, 1);
  SamplingParams p;
  p.temperature = 1.0f;
  auto run = [&](uint64_t seed) {
    SamplerRng rng(seed);
    std::vector<int32_t> out;
    for (int i = 0; i < 40; ++i) out.push_back(Draw(logits, p, rng));
    return out;
  };
  EXPECT_EQ(run(1234), run(1234));
  EXPECT_NE(run(1234), run(1235));
}

TEST(SamplerTest, TemperatureSamplingFollowsTheSoftmax) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams p;
  p.temperature = 1.0f;
  SamplerRng rng(99);
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[Draw(logits, p, rng)];
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.015);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.015);
  EXPECT_NEAR(counts[2] / double(n), 0.2, 0.015);
  // Temperature 0.5 squares the odds: p ~ 0.25 : 0.09 : 0.04.
  p.temperature = 0.5f;
  counts.clear();
  for (int i = 0; i < n; ++i) ++counts[Draw(logits, p, rng)];
  EXPECT_NEAR(counts[0] / double(n), 0.25 / 0.38, 0.015);
}

TEST(SamplerTest, ProbabilitiesMatchTheExactSoftmax) {
  auto logits = RandomLogits(5000, 23);
  logits[7] = 40.0f;   // a dominant token
  logits[8] = -60.0f;  // far below: e^-100 underflows to 0
  SamplingParams p;
  p.temperature = 0.6f;
  p.top_k = 5000;  // all tokens, sorted
  auto cand = CandidateDistribution(logits, p);
  const float mx = *std::max_element(logits.begin(), logits.end());
  double z = 0;
  for (float l : logits) z += std::exp((l - mx) / 0.6);
  for (const auto& [t, prob] : cand) {
    const double exact = std::exp((logits[t] - mx) / 0.6) / z;
    ASSERT_NEAR(prob, exact, 1e-6 + 1e-5 * exact) << "token " << t;
  }
}

TEST(SamplerTest, MaskedTokensAreNeverDrawn) {
  std::vector<float> logits(10, 0.0f);
  logits[0] = -std::numeric_limits<float>::infinity();
  SamplingParams p;
  p.temperature = 1.0f;
  SamplerRng rng(5);
  for (int i = 0; i < 5000; ++i) ASSERT_NE(Draw(logits, p, rng), 0);
  p.top_p = 0.999f;
  for (int i = 0; i < 500; ++i) ASSERT_NE(Draw(logits, p, rng), 0);
}

TEST(SamplerTest, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities 0.4, 0.3, 0.2, 0.1.
  const std::vector<float> logits = {std::log(0.4f), std::log(0.3f), std::log(0.2f), std::log(0.1f)};
  SamplingParams p;
  p.top_p = 0.65f;
  auto cand = CandidateDistribution(logits, p);
  ASSERT_EQ(cand.size(), 2u);  // 0.4 + 0.3 >= 0.65
  EXPECT_EQ(cand[0].first, 0);
  EXPECT_EQ(cand[1].first, 1);
  EXPECT_NEAR(cand[0].second, 0.4 / 0.7, 1e-5);
  p.top_p = 0.75f;
  EXPECT_EQ(CandidateDistribution(logits, p).size(), 3u);
  p.top_p = 1.0f;
  EXPECT_EQ(CandidateDistribution(logits, p).size(), 4u);
  // Draws never leave the nucleus.
  p.top_p = 0.65f;
  SamplerRng rng(3);
  for (int i = 0; i < 2000; ++i) EXPECT_LE(Draw(logits, p, rng), 1);
}

// The incremental nucleus selection equals a full sort on a large vocabulary.
TEST(SamplerTest, TopPOnALargeVocabularyMatchesAFullSort) {
  for (float top_p : {0.1f, 0.5f, 0.9f, 0.99f}) {
    auto logits = RandomLogits(20000, 17);
    SamplingParams p;
    p.top_p = top_p;
    p.temperature = 0.7f;
    auto cand = CandidateDistribution(logits, p);
    std::vector<int32_t> ids(logits.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
    std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
    const float mx = logits[ids[0]];
    double z = 0;
    for (float l : logits) z += std::exp((l - mx) / 0.7);
    double cum = 0;
    size_t keep = 0;
    while (keep < ids.size()) {
      cum += std::exp((logits[ids[keep]] - mx) / 0.7) / z;
      ++keep;
      if (cum >= top_p - 1e-7) break;
    }
    ASSERT_EQ(cand.size(), keep) << "top_p " << top_p;
    for (size_t i = 0; i < keep; ++i) ASSERT_EQ(cand[i].first, ids[i]) << "top_p " << top_p;
  }
}

TEST(SamplerTest, MinPDropsTokensBelowAFractionOfTheBest) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  p.min_p = 0.25f;  // threshold 0.125: keeps 0.5, 0.3, 0.15
  auto cand = CandidateDistribution(logits, p);
  ASSERT_EQ(cand.size(), 3u);
  EXPECT_NEAR(cand[0].second, 0.5 / 0.95, 1e-5);
  p.min_p = 0.7f;  // threshold 0.35
  EXPECT_EQ(CandidateDistribution(logits, p).size(), 1u);
  // Draws (the plain-temperature path) follow the cut distribution.
  p.min_p = 0.25f;
  SamplerRng rng(11);
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++counts[Draw(logits, p, rng)];
  EXPECT_EQ(counts[3], 0);
  EXPECT_NEAR(counts[0] / double(n), 0.5 / 0.95, 0.015);
  EXPECT_NEAR(counts[2] / double(n), 0.15 / 0.95, 0.015);
}

TEST(SamplerTest, TopKKeepsTheKBest) {
  auto logits = RandomLogits(1000, 5);
  SamplingParams p;
  p.top_k = 7;
  auto cand = CandidateDistribution(logits, p);
  ASSERT_EQ(cand.size(), 7u);
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  for (const auto& [t, prob] : cand) EXPECT_GE(logits[t], sorted[6]);
  double sum = 0;
  for (const auto& [t, prob] : cand) sum += prob;
  EXPECT_NEAR(sum, 1.0, 1e-5);
}

TEST(SamplerTest, PenaltiesChangeOnlyTheRightLogits) {
  std::vector<float> logits = {2.0f, -2.0f, 1.0f, 1.0f, 0.5f};
  const std::vector<int32_t> prompt = {0, 1};
  const std::vector<int32_t> output = {2, 2, 3};
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  ApplyPenalties(logits, p, prompt, output);
  EXPECT_FLOAT_EQ(logits[0], 1.0f);   // positive: divided
  EXPECT_FLOAT_EQ(logits[1], -4.0f);  // negative: multiplied
  EXPECT_FLOAT_EQ(logits[2], 0.5f);
  EXPECT_FLOAT_EQ(logits[3], 0.5f);
  EXPECT_FLOAT_EQ(logits[4], 0.5f);   // never seen: untouched

  logits = {2.0f, -2.0f, 1.0f, 1.0f, 0.5f};
  p = SamplingParams{};
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  ApplyPenalties(logits, p, prompt, output);
  EXPECT_FLOAT_EQ(logits[0], 2.0f) << "presence/frequency count the output only";
  EXPECT_FLOAT_EQ(logits[1], -2.0f);
  EXPECT_FLOAT_EQ(logits[2], 1.0f - 0.5f - 2 * 0.25f);
  EXPECT_FLOAT_EQ(logits[3], 1.0f - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(logits[4], 0.5f);
}

TEST(SamplerTest, RepetitionPenaltyChangesTheGreedyChoice) {
  std::vector<float> logits = {3.0f, 2.0f, 0.0f};
  SamplingParams p;
  p.temperature = 0;
  SamplerRng rng(0);
  const std::vector<int32_t> output = {0};
  EXPECT_EQ(Draw(logits, p, rng, {}, output), 0);
  p.repetition_penalty = 2.0f;  // 3.0 -> 1.5 < 2.0
  EXPECT_EQ(Draw(logits, p, rng, {}, output), 1);
}

TEST(SamplerTest, LogprobsAreThoseOfTheRawLogits) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = 2;
  p.repetition_penalty = 5.0f;  // does not change the reported logprobs
  SamplerRng rng(0);
  std::vector<float> l = logits;
  const std::vector<int32_t> output = {0};
  SampleResult r = Sample(l, p, {}, output, rng);
  ASSERT_TRUE(r.logprobs);
  EXPECT_EQ(r.token, 1);
  EXPECT_NEAR(r.logprobs->logprob, std::log(0.3), 1e-5);
  EXPECT_EQ(r.logprobs->rank, 2);
  ASSERT_EQ(r.logprobs->top.size(), 2u);
  EXPECT_EQ(r.logprobs->top[0].first, 0);
  EXPECT_NEAR(r.logprobs->top[0].second, std::log(0.5), 1e-5);
  EXPECT_EQ(r.logprobs->top[1].first, 1);
}

TEST(SamplingParamsTest, ValidateNamesTheField) {
  SamplingParams p;
  EXPECT_TRUE(p.Validate(10).ok());
  p.top_p = 0;
  EXPECT_NE(p.Validate(10).message().find("top_p"), std::string::npos);
  p = SamplingParams{};
  p.stop_token_ids = {10};
  EXPECT_NE(p.Validate(10).message().find("stop_token_ids"), std::string::npos);
  p = SamplingParams{};
  p.logprobs = 21;
  EXPECT_FALSE(p.Validate(10).ok());
  p = SamplingParams{};
  p.max_tokens = 0;
  EXPECT_FALSE(p.Validate(10).ok());
}

}  // namespace
}  // namespace crescent::engine
