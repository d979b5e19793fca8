// The synthetic workloads of `crescent bench` (see bench.h for their shape).
#pragma once

#include <string>
#include <vector>

#include "bench/bench.h"

namespace crescent::bench {

struct Prompt {
  std::string prompt_json;  // the JSON value of "prompt": a string or an array of ids
  int prompt_len = 0;       // tokens (estimated for text: one a word)
  int output_len = 0;       // max_tokens
};

// num_prompts prompts, the same for the same options and seed.
StatusOr<std::vector<Prompt>> MakeDataset(const BenchOptions& options);

// The seconds after the start at which each request is sent: a Poisson
// process at `rate` requests/s (all zero for an infinite rate).
std::vector<double> ArrivalTimes(int count, double rate, uint64_t seed);

}  // namespace crescent::bench
