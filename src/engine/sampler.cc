#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_map>

namespace crescent::engine {
namespace {

// A double in [0, 1) from 53 random bits, independent of the standard
// library's distribution implementation (stable across toolchains).
double UniformUnit(SamplerRng& rng) {
  return static_cast<double>(rng() >> 11) * (1.0 / static_cast<double>(1ULL << 53));
}

// The loops below run over the whole vocabulary (150k entries) for every
// sampled token, so they are written to vectorise (this file is built with
// -O3): no early exits, no calls in the loop bodies.

float MaxValue(std::span<const float> x) {
  constexpr int kLanes = 16;
  float lane[kLanes];
  std::fill(lane, lane + kLanes, -std::numeric_limits<float>::infinity());
  size_t i = 0;
  for (; i + kLanes <= x.size(); i += kLanes)
    for (int j = 0; j < kLanes; ++j) lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
  float best = -std::numeric_limits<float>::infinity();
  for (int j = 0; j < kLanes; ++j) best = lane[j] > best ? lane[j] : best;
  for (; i < x.size(); ++i) best = x[i] > best ? x[i] : best;
  return best;
}

// e^x for x <= 0 to ~1e-6 relative; exactly 0 below -87 (and for -inf).
// 2^(x log2 e) split into 2^n (exponent bits) times a degree-7 polynomial
// of the fraction.
inline float ExpNonPositive(float x) {
  const float clamped = x < -87.0f ? -87.0f : x;
  const float t = clamped * 1.44269504088896341f;
  const float n = std::floor(t);
  const float f = t - n;
  float p = 1.52527338e-5f;
  p = p * f + 1.54035304e-4f;
  p = p * f + 1.33335581e-3f;
  p = p * f + 9.61812911e-3f;
  p = p * f + 5.55041087e-2f;
  p = p * f + 2.40226507e-1f;
  p = p * f + 6.93147181e-1f;
  p = p * f + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.0f ? 0.0f : p * scale;
}

// weights[i] = exp((logits[i] - max) / temperature), or 0 where that is
// below min_p (of the best, whose weight is 1). Returns the sum.
double Weights(std::span<const float> logits, float temperature, float min_p,
               std::vector<float>* weights) {
  const float max_logit = MaxValue(logits);
  const float inv_t = 1.0f / temperature;
  const float min_w = min_p > 0.0f ? min_p : 0.0f;
  weights->resize(logits.size());
  float* w = weights->data();
  const float* l = logits.data();
  const size_t n = logits.size();
  for (size_t i = 0; i < n; ++i) {
    const float e = ExpNonPositive((l[i] - max_logit) * inv_t);
    w[i] = e >= min_w ? e : 0.0f;
  }
  double sum = 0.0;
  constexpr int kLanes = 16;
  float lane[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lane[j] += w[i + j];
  for (int j = 0; j < kLanes; ++j) sum += lane[j];
  for (; i < n; ++i) sum += w[i];
  return sum;
}

// Sum of the weights >= t.
double MassAtLeast(const std::vector<float>& w, float t) {
  constexpr int kLanes = 16;
  float lane[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= w.size(); i += kLanes)
    for (int j = 0; j < kLanes; ++j) lane[j] += w[i + j] >= t ? w[i + j] : 0.0f;
  double sum = 0.0;
  for (int j = 0; j < kLanes; ++j) sum += lane[j];
  for (; i < w.size(); ++i) sum += w[i] >= t ? w[i] : 0.0f;
  return sum;
}

}  // namespace

double DrawUniform(SamplerRng& rng) { return UniformUnit(rng); }

int32_t Argmax(std::span<const float> logits) {
  if (logits.empty()) return 0;
  const float best = MaxValue(logits);
  for (size_t i = 0; i < logits.size(); ++i)
    if (logits[i] == best) return static_cast<int32_t>(i);
  return 0;  // only NaNs
}

void ApplyPenalties(std::span<float> logits, const SamplingParams& params,
                    std::span<const int32_t> prompt,
                    std::span<const int32_t> output) {
  const int vocab = static_cast<int>(logits.size());
  if (params.repetition_penalty != 1.0f) {
    std::vector<int32_t> seen(prompt.begin(), prompt.end());
    seen.insert(seen.end(), output.begin(), output.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int32_t t : seen) {
      if (t < 0 || t >= vocab) continue;
      float& l = logits[t];
      l = l > 0 ? l / params.repetition_penalty : l * params.repetition_penalty;
    }
  }
  if (params.presence_penalty != 0.0f || params.frequency_penalty != 0.0f) {
    std::unordered_map<int32_t, int> counts;
    for (int32_t t : output) ++counts[t];
    for (const auto& [t, c] : counts) {
      if (t < 0 || t >= vocab) continue;
      logits[t] -= params.frequency_penalty * static_cast<float>(c) + params.presence_penalty;
    }
  }
}

std::vector<std::pair<int32_t, float>> CandidateDistribution(
    std::span<const float> logits, const SamplingParams& params) {
  std::vector<float> w;
  const double sum = Weights(logits, params.temperature, params.min_p, &w);
  auto better = [](const auto& a, const auto& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  };
  // Only tokens of weight >= floor can survive the filters below.
  float floor = std::numeric_limits<float>::min();
  if (params.top_k <= 0 && params.top_p < 1.0f) {
    // The nucleus (best-first prefix reaching top_p of the mass) lies within
    // any set {w >= t} whose mass already reaches top_p: lower t from the
    // best weight (1) until it does, then sort only those tokens.
    const double target = static_cast<double>(params.top_p) * sum;
    float t = 0.5f;
    while (t > std::numeric_limits<float>::min() && MassAtLeast(w, t) < target) t *= 0.25f;
    floor = std::max(floor, t);
  }
  std::vector<std::pair<int32_t, float>> cand;  // (token, weight)
  for (size_t i = 0; i < w.size(); ++i)
    if (w[i] >= floor) cand.emplace_back(static_cast<int32_t>(i), w[i]);
  const int k = params.top_k;
  if (k > 0 && static_cast<size_t>(k) < cand.size()) {
    std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end(), better);
    cand.resize(k);
  }
  if (k > 0 || params.top_p < 1.0f) std::sort(cand.begin(), cand.end(), better);
  // Probabilities: of the whole distribution for the nucleus cut (as vLLM,
  // top_p applies after top_k's renormalisation), then renormalised.
  double total = sum;
  if (k > 0) {
    total = 0.0;
    for (const auto& c : cand) total += c.second;
  }
  if (params.top_p < 1.0f) {
    double cum = 0.0;
    size_t keep = cand.size();
    for (size_t i = 0; i < cand.size(); ++i) {
      cum += cand[i].second / total;
      // The small slack keeps a token whose mass is lost to rounding.
      if (cum >= static_cast<double>(params.top_p) - 1e-6) {
        keep = i + 1;
        break;
      }
    }
    cand.resize(keep);
    total = 0.0;
    for (const auto& c : cand) total += c.second;
  }
  for (auto& c : cand) c.second = static_cast<float>(c.second / total);
  return cand;
}

TokenLogprobs ComputeLogprobs(std::span<const float> raw, int32_t token, int k) {
  const float max_logit = MaxValue(raw);
  double sum = 0.0;
  for (float l : raw) sum += std::exp(static_cast<double>(l - max_logit));
  const float lse = max_logit + static_cast<float>(std::log(sum));
  TokenLogprobs out;
  out.token = token;
  out.logprob = raw[token] - lse;
  out.rank = 1;
  for (float l : raw) out.rank += l > raw[token] ? 1 : 0;
  if (k > 0) {
    std::vector<int32_t> ids(raw.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
    const size_t kk = std::min<size_t>(k, ids.size());
    std::partial_sort(ids.begin(), ids.begin() + kk, ids.end(), [&](int32_t a, int32_t b) {
      return raw[a] > raw[b] || (raw[a] == raw[b] && a < b);
    });
    for (size_t i = 0; i < kk; ++i) out.top.emplace_back(ids[i], raw[ids[i]] - lse);
  }
  return out;
}

SampleResult Sample(std::span<float> logits, const SamplingParams& params,
                    std::span<const int32_t> prompt,
                    std::span<const int32_t> output, SamplerRng& rng) {
  SampleResult result;
  std::vector<float> raw;
  if (params.logprobs) raw.assign(logits.begin(), logits.end());
  ApplyPenalties(logits, params, prompt, output);
  if (params.greedy()) {
    result.token = Argmax(logits);
  } else if (params.top_k <= 0 && params.top_p >= 1.0f) {
    // Plain temperature (and min_p): one pass of weights over the vocabulary,
    // no candidate list to build or sort (the common case on a 150k vocab).
    std::vector<float> w;
    const double sum = Weights(logits, params.temperature, params.min_p, &w);
    const double target = UniformUnit(rng) * sum;
    double cum = 0.0;
    result.token = Argmax(logits);  // rounding: target beyond the last sum
    for (size_t i = 0; i < w.size(); ++i) {
      cum += w[i];
      if (target < cum && w[i] > 0.0f) {
        result.token = static_cast<int32_t>(i);
        break;
      }
    }
  } else {
    auto cand = CandidateDistribution(logits, params);
    const double u = UniformUnit(rng);
    double cum = 0.0;
    result.token = cand.back().first;  // rounding: u beyond the last sum
    for (const auto& [t, p] : cand) {
      cum += p;
      if (u < cum) {
        result.token = t;
        break;
      }
    }
  }
  if (params.logprobs) result.logprobs = ComputeLogprobs(raw, result.token, *params.logprobs);
  return result;
}

}  // namespace crescent::engine
