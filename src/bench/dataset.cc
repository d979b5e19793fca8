#include "bench/dataset.h"

#include <algorithm>
#include <cmath>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace crescent::bench {
namespace {

// Token ids valid in every vocabulary we serve (Qwen 151,936, Llama 128,256)
// and past the special tokens at either end.
constexpr int kMinTokenId = 1000;
constexpr int kMaxTokenId = 30000;

// Common English words; each is one token (with its leading space) in the
// Qwen and Llama BPE vocabularies, so a prompt of n words is about n tokens.
constexpr const char* kWords[] = {
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are",
    "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by",
    "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there",
    "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other",
    "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make",
    "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number",
    "no", "way", "could", "people", "my", "than", "first", "water", "been", "call", "who",
    "oil", "its", "now", "find", "long", "down", "day", "did", "get", "come", "made", "may",
    "part", "over", "new", "sound", "take", "only", "little", "work", "know", "place", "year",
    "live", "me", "back", "give", "most", "very", "after", "thing", "our", "just", "name",
    "good", "sentence", "man", "think", "say", "great", "where", "help", "through", "much",
    "before", "line", "right", "too", "mean", "old", "any", "same", "tell", "boy", "follow",
    "came", "want", "show", "also", "around", "form", "three", "small", "set", "put", "end",
    "does", "another", "well", "large", "must", "big", "even", "such", "because", "turn",
    "here", "why", "ask", "went", "men", "read", "need", "land", "different", "home", "us",
    "move", "try", "kind", "hand", "picture", "again", "change", "off", "play", "spell", "air",
    "away", "animal", "house", "point", "page", "letter", "mother", "answer", "found", "study",
    "still", "learn", "should", "America", "world"};
constexpr int kNumWords = sizeof(kWords) / sizeof(kWords[0]);

// Conversation openers so that sharegpt-like prompts read like requests.
constexpr const char* kOpeners[] = {
    "Explain in detail why", "Write a short story where", "Summarize the following text:",
    "Translate into French:", "Can you help me understand how", "List the steps to",
    "What would happen if", "Give me three reasons that"};

std::string RandomText(int words, std::mt19937_64& rng) {
  std::uniform_int_distribution<int> word(0, kNumWords - 1);
  std::uniform_int_distribution<int> opener(0, 7);
  std::string text = kOpeners[opener(rng)];
  for (int i = 0; i < words; ++i) {
    text += ' ';
    text += kWords[word(rng)];
    if (i % 17 == 16) text += '.';
  }
  return text;
}

}  // namespace

StatusOr<std::vector<Prompt>> MakeDataset(const BenchOptions& o) {
  if (o.num_prompts <= 0) return InvalidArgumentError("--num-prompts must be at least 1");
  if (o.input_len <= 0 || o.output_len <= 0) {
    return InvalidArgumentError("--input-len and --output-len must be at least 1");
  }
  if (o.range_ratio < 0 || o.range_ratio >= 1) {
    return InvalidArgumentError("--range-ratio must be in [0, 1)");
  }
  std::mt19937_64 rng(o.seed);
  std::vector<Prompt> prompts;
  prompts.reserve(o.num_prompts);
  if (o.dataset == "random") {
    std::uniform_int_distribution<int> id(kMinTokenId, kMaxTokenId - 1);
    std::vector<int> prefix(o.prefix_len);
    for (int& t : prefix) t = id(rng);
    auto length = [&](int len) {
      int lo = std::max(1, static_cast<int>(std::floor(len * (1 - o.range_ratio))));
      int hi = std::max(lo, static_cast<int>(std::ceil(len * (1 + o.range_ratio))));
      return std::uniform_int_distribution<int>(lo, hi)(rng);
    };
    for (int i = 0; i < o.num_prompts; ++i) {
      int in = length(o.input_len), out = length(o.output_len);
      std::vector<int> ids = prefix;
      for (int k = 0; k < in; ++k) ids.push_back(id(rng));
      prompts.push_back({nlohmann::json(ids).dump(), static_cast<int>(ids.size()), out});
    }
  } else if (o.dataset == "sharegpt-like") {
    // ShareGPT's prompt and reply lengths are long-tailed: log-normal with
    // sigma ~1 (prompts) and ~0.7 (replies) fits their histograms' shape.
    std::lognormal_distribution<double> in_len(std::log(o.input_len), 1.0);
    std::lognormal_distribution<double> out_len(std::log(o.output_len), 0.7);
    for (int i = 0; i < o.num_prompts; ++i) {
      int in = std::clamp(static_cast<int>(in_len(rng)), 4, 4 * o.input_len);
      int out = std::clamp(static_cast<int>(out_len(rng)), 1, 4 * o.output_len);
      prompts.push_back({nlohmann::json(RandomText(in, rng)).dump(), in, out});
    }
  } else {
    return InvalidArgumentError(
        fmt::format("--dataset {}: unknown (random | sharegpt-like)", o.dataset));
  }
  return prompts;
}

std::vector<double> ArrivalTimes(int count, double rate, uint64_t seed) {
  std::vector<double> t(count, 0.0);
  if (!std::isfinite(rate) || rate <= 0) return t;
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  std::exponential_distribution<double> gap(rate);
  double now = 0;
  for (int i = 0; i < count; ++i) {
    t[i] = now;
    now += gap(rng);
  }
  return t;
}

}  // namespace crescent::bench
