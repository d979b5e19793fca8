#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

namespace crescent::engine {
namespace {

// A double in [0, 1) from 53 random bits, independent of the standard
// library's distribution implementation (stable across toolchains).
double UniformUnit(SamplerRng& rng) {
  return static_cast<double>(rng() >> 11) * (1.0 / static_cast<double>(1ULL << 53));
}

}  // namespace

int32_t Argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
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
  const float inv_t = 1.0f / params.temperature;
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  // min_p compares p_i / p_max = exp((l_i - l_max) / T) with min_p.
  const float min_scaled = params.min_p > 0.0f
                               ? std::log(params.min_p)
                               : -std::numeric_limits<float>::infinity();
  std::vector<std::pair<int32_t, float>> cand;  // (token, scaled logit)
  cand.reserve(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    const float scaled = (logits[i] - max_logit) * inv_t;
    if (scaled >= min_scaled) cand.emplace_back(static_cast<int32_t>(i), scaled);
  }
  auto better = [](const auto& a, const auto& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  };
  const int k = params.top_k;
  if (k > 0 && static_cast<size_t>(k) < cand.size()) {
    std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end(), better);
    cand.resize(k);
  }
  // Sorting a 150k-token vocabulary costs milliseconds: only when top_k or
  // top_p made the order matter (and the candidate set small).
  if (k > 0 || params.top_p < 1.0f) std::sort(cand.begin(), cand.end(), better);
  double sum = 0.0;
  for (auto& [t, v] : cand) sum += std::exp(static_cast<double>(v));
  for (auto& [t, v] : cand) v = static_cast<float>(std::exp(static_cast<double>(v)) / sum);
  if (params.top_p < 1.0f) {
    double cum = 0.0;
    size_t keep = 0;
    while (keep < cand.size()) {
      cum += cand[keep].second;
      ++keep;
      // The small slack keeps a token whose mass is lost to rounding.
      if (cum >= static_cast<double>(params.top_p) - 1e-7) break;
    }
    cand.resize(keep);
    double kept = 0.0;
    for (auto& [t, p] : cand) kept += p;
    for (auto& [t, p] : cand) p = static_cast<float>(p / kept);
  }
  return cand;
}

TokenLogprobs ComputeLogprobs(std::span<const float> raw, int32_t token, int k) {
  const float max_logit = *std::max_element(raw.begin(), raw.end());
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
    const float inv_t = 1.0f / params.temperature;
    const float max_logit = *std::max_element(logits.begin(), logits.end());
    const float min_scaled = params.min_p > 0.0f ? std::log(params.min_p)
                                                 : -std::numeric_limits<float>::infinity();
    double sum = 0.0;
    for (float& l : logits) {
      const float scaled = (l - max_logit) * inv_t;
      l = scaled >= min_scaled ? std::exp(scaled) : 0.0f;  // weight, in place
      sum += l;
    }
    const double target = UniformUnit(rng) * sum;
    double cum = 0.0;
    result.token = Argmax(logits);  // rounding: target beyond the last sum
    for (size_t i = 0; i < logits.size(); ++i) {
      cum += logits[i];
      if (target < cum && logits[i] > 0.0f) {
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
