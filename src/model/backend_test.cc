// The CPU backend against the scalar reference forward, and the KV block
// API the connector uses.
#include "model/backend.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "common/testutil.h"
#include "model/make_model.h"
#include "model/reference_forward.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace crescent::model {
namespace {

double RelError(std::span<const float> out, std::span<const float> ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (double{out[i]} - ref[i]) * (double{out[i]} - ref[i]);
    den += double{ref[i]} * ref[i];
  }
  return std::sqrt(num / den);
}

std::vector<std::vector<float>> Reference(const std::string& dir, const std::vector<int32_t>& p) {
  auto config = LoadModelConfig(dir);
  auto ckpt = Checkpoint::Open(dir);
  EXPECT_TRUE(ckpt.ok()) << ckpt.status().ToString();
  auto weights = BindWeights(**ckpt, *config);
  EXPECT_TRUE(weights.ok()) << weights.status().ToString();
  return ReferenceForward(*config, *weights, p).value();
}

std::vector<int32_t> Iota(int32_t n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

TEST(BackendTest, FixtureFastPathMatchesReference) {
  for (const char* m : {"tiny-qwen3", "tiny-qwen2", "tiny-llama3"}) {
    const std::string dir = std::string("tests/data/models/") + m;
    std::vector<int32_t> prompt;
    for (int i = 0; i < 20; ++i) prompt.push_back((i * 37 + 11) % 500);
    auto ref = Reference(dir, prompt);
    auto backend = LoadModel(dir, {.num_threads = 2, .num_kv_blocks = 8});
    ASSERT_TRUE(backend.ok());
    std::vector<int32_t> table = Iota(8);
    ForwardOutput out;
    ASSERT_TRUE((*backend)->Forward({{{prompt, 0, table, LogitsMode::kAll}}}, &out).ok());
    for (size_t p = 0; p < prompt.size(); ++p) {
      EXPECT_LT(RelError(out.Row(p), ref[p]), 1e-5) << m << " position " << p;
    }
  }
}

}  // namespace
}  // namespace crescent::model
