// The CUDA backend against the CPU backend (the float32 reference) on
// random checkpoints of several shapes (every attention kernel variant:
// tensor-core tiles and split-K, head_dim 8..128, GQA, biases, q/k-norm),
// long prompts and mixed batches; the KV wire format (bf16 blocks equal to
// the CPU's float32 blocks rounded) and its round trip through host
// buffers; the KV pool sizing. Fixture fidelity is in fidelity_test.cc.
// Every test skips when no GPU is usable (CI compiles this, never runs it).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>

#include "common/testutil.h"
#include "model/backend.h"
#include "model/cuda/cuda_backend.h"
#include "model/make_model.h"
#include "model/weights.h"

namespace crescent::model {
namespace {

#define SKIP_WITHOUT_GPU() \
  if (!cuda::DeviceAvailable()) GTEST_SKIP() << "no CUDA device in this machine"

// bf16 weights feed both backends; the GPU rounds activations and K/V to
// bf16 (relative step 2^-8) and accumulates in float32.
constexpr double kBf16Tolerance = 3e-2;

double RelError(std::span<const float> out, std::span<const float> ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (double{out[i]} - ref[i]) * (double{out[i]} - ref[i]);
    den += double{ref[i]} * ref[i];
  }
  return std::sqrt(num / den);
}

std::vector<int32_t> RandomTokens(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

std::unique_ptr<Backend> Load(const std::string& dir, const std::string& backend,
                              int32_t block_size = 16, int32_t blocks = 256) {
  BackendOptions o;
  o.backend = backend;
  o.kv_block_size = block_size;
  o.num_kv_blocks = blocks;
  auto b = LoadModel(dir, o);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return b.ok() ? std::move(b).value() : nullptr;
}

// A small random model of the given attention shape.
ModelConfig SmallConfig(Architecture arch, int heads, int kv_heads, int head_dim) {
  ModelConfig c;
  c.arch = arch;
  c.qk_norm = arch == Architecture::kQwen3;
  c.attention_bias = arch == Architecture::kQwen2;
  c.vocab_size = 1000;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_layers = 2;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.rope.theta = 1e6;
  c.max_position_embeddings = 8192;
  c.torch_dtype = "bfloat16";
  return c;
}

// Runs the same schedule on both backends and compares every logits row:
// a long prompt in two chunks (tiles across many key tiles, a chunk that
// starts mid-block), then decode steps of that sequence batched with a
// second sequence's prefill and decodes (split-K over ~1000 keys).
void CompareWithCpu(const std::string& dir, double tolerance, int prompt_len) {
  auto cpu = Load(dir, "cpu");
  auto gpu = Load(dir, "cuda");
  ASSERT_TRUE(cpu && gpu);
  const int vocab = cpu->config().vocab_size;
  std::vector<int32_t> a = RandomTokens(prompt_len, vocab, 1);
  a.reserve(prompt_len + 8);  // the batches below hold spans into it
  std::vector<int32_t> b = RandomTokens(37, vocab, 2);
  std::vector<int32_t> ta(128), tb(128);
  std::iota(ta.begin(), ta.end(), 0);
  std::iota(tb.begin(), tb.end(), 128);
  std::reverse(ta.begin(), ta.end());  // non-contiguous tables
  const int first = prompt_len / 3 + 5;
  std::vector<ForwardBatch> steps;
  steps.push_back({{{std::span(a).first(first), 0, ta, LogitsMode::kAll}}});
  steps.push_back({{{std::span(a).subspan(first), first, ta, LogitsMode::kAll}}});
  int pos_b = 0;
  for (int step = 0; step < 4; ++step) {
    ForwardBatch batch;
    a.push_back(static_cast<int32_t>((step * 131 + 7) % vocab));
    batch.sequences.push_back(
        {std::span(a).last(1), static_cast<int32_t>(a.size() - 1), ta, LogitsMode::kLast});
    const int n = step == 0 ? 20 : 1;  // one prefill chunk, then decodes
    batch.sequences.push_back({std::span(b).subspan(pos_b, n), pos_b, tb, LogitsMode::kAll});
    pos_b += n;
    steps.push_back(batch);
  }
  for (size_t s = 0; s < steps.size(); ++s) {
    ForwardOutput co, go;
    Status cs = cpu->Forward(steps[s], &co);
    ASSERT_TRUE(cs.ok()) << cs.ToString();
    Status st = gpu->Forward(steps[s], &go);
    ASSERT_TRUE(st.ok()) << st.ToString();
    ASSERT_EQ(co.row_begin, go.row_begin);
    double worst = 0;
    for (int32_t r = 0; r < co.row_begin.back(); ++r) {
      worst = std::max(worst, RelError(go.Row(r), co.Row(r)));
    }
    EXPECT_LT(worst, tolerance) << dir << " step " << s;
    std::printf("step %zu: %d rows, worst relative error %.2e\n", s, co.row_begin.back(), worst);
  }
}

// One sequence decoding alone (the persistent decode step where the shape
// allows it, decode_step.h): a prompt, then single-token steps compared
// row by row with the CPU, one of them without logits (its KV must still
// be written: the next step attends to it).
void CompareSingleDecode(const std::string& dir, double tolerance, int prompt_len) {
  auto cpu = Load(dir, "cpu");
  auto gpu = Load(dir, "cuda");
  ASSERT_TRUE(cpu && gpu);
  const int vocab = cpu->config().vocab_size;
  std::vector<int32_t> a = RandomTokens(prompt_len, vocab, 5);
  a.reserve(prompt_len + 16);
  std::vector<int32_t> table(128);
  std::iota(table.begin(), table.end(), 0);
  std::reverse(table.begin(), table.end());
  ForwardOutput co, go;
  ASSERT_TRUE(cpu->Forward({{{a, 0, table}}}, &co).ok());
  ASSERT_TRUE(gpu->Forward({{{a, 0, table}}}, &go).ok());
  for (int step = 0; step < 6; ++step) {
    a.push_back(static_cast<int32_t>((step * 977 + 3) % vocab));
    const LogitsMode mode = step == 2 ? LogitsMode::kNone : LogitsMode::kLast;
    ForwardBatch batch{{{std::span(a).last(1), static_cast<int32_t>(a.size() - 1), table, mode}}};
    Status cs = cpu->Forward(batch, &co);
    ASSERT_TRUE(cs.ok()) << cs.ToString();
    Status gs = gpu->Forward(batch, &go);
    ASSERT_TRUE(gs.ok()) << gs.ToString();
    ASSERT_EQ(co.row_begin, go.row_begin);
    if (mode == LogitsMode::kNone) continue;
    const double err = RelError(go.Row(0), co.Row(0));
    EXPECT_LT(err, tolerance) << dir << " step " << step;
    std::printf("single decode step %d (context %zu): relative error %.2e\n", step, a.size(), err);
  }
}

struct Shape {
  const char* name;
  Architecture arch;
  int heads, kv_heads, head_dim;
};

class CudaVsCpuTest : public ::testing::TestWithParam<Shape> {};

TEST_P(CudaVsCpuTest, LogitsAgreeOnLongPromptsAndMixedBatches) {
  SKIP_WITHOUT_GPU();
  const Shape& s = GetParam();
  testing::TempDir dir;
  ASSERT_TRUE(
      WriteRandomCheckpoint(SmallConfig(s.arch, s.heads, s.kv_heads, s.head_dim), dir.path(), 7)
          .ok());
  CompareWithCpu(dir.path(), kBf16Tolerance, 1000);
}

TEST_P(CudaVsCpuTest, SingleSequenceDecodeAgrees) {
  SKIP_WITHOUT_GPU();
  const Shape& s = GetParam();
  testing::TempDir dir;
  ASSERT_TRUE(
      WriteRandomCheckpoint(SmallConfig(s.arch, s.heads, s.kv_heads, s.head_dim), dir.path(), 11)
          .ok());
  CompareSingleDecode(dir.path(), kBf16Tolerance, 1500);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaVsCpuTest,
    ::testing::Values(Shape{"qwen3_d128_gqa2", Architecture::kQwen3, 4, 2, 128},
                      Shape{"llama_d64_gqa4", Architecture::kLlama, 8, 2, 64},
                      Shape{"qwen2_d32_bias_mqa", Architecture::kQwen2, 8, 1, 32},
                      Shape{"llama_d16_nogqa", Architecture::kLlama, 4, 4, 16}),
    [](const auto& info) { return std::string(info.param.name); });

// The real Qwen3-0.6B shape (28 layers, 151,936-token vocabulary).
TEST(CudaBackendTest, Qwen3_0_6bShapedModelAgreesWithCpu) {
  SKIP_WITHOUT_GPU();
  testing::TempDir dir;
  ASSERT_TRUE(MakeModel({"qwen3-0.6b", dir.path(), 1, ""}).ok());
  CompareWithCpu(dir.path(), kBf16Tolerance, 300);
  CompareSingleDecode(dir.path(), kBf16Tolerance, 700);
}

// K/V blocks in the wire layout: the GPU's bf16 block equals the CPU's
// float32 block up to bf16 rounding, through pageable and pinned buffers;
// blocks written back (elsewhere in the pool) serve a decode exactly as the
// originals did.
TEST(CudaBackendTest, KvBlocksMatchCpuAndRoundTrip) {
  SKIP_WITHOUT_GPU();
  const std::string dir = "tests/data/models/tiny-qwen3";
  auto cpu = Load(dir, "cpu", 16, 64);
  auto gpu = Load(dir, "cuda", 16, 64);
  ASSERT_TRUE(cpu && gpu);
  EXPECT_EQ(gpu->kv_layout().dtype, KvDtype::kBFloat16);
  EXPECT_EQ(gpu->kv_layout().Tag().rfind("kv1-bf16-", 0), 0u) << gpu->kv_layout().Tag();
  EXPECT_EQ(gpu->model_fingerprint(), cpu->model_fingerprint());
  std::vector<int32_t> prompt = RandomTokens(40, 512, 3);
  std::vector<int32_t> table = {5, 9, 2};
  ForwardOutput co, go;
  ASSERT_TRUE(cpu->Forward({{{prompt, 0, table}}}, &co).ok());
  ASSERT_TRUE(gpu->Forward({{{prompt, 0, table}}}, &go).ok());

  const KvBlockLayout& gl = gpu->kv_layout();
  const KvBlockLayout& cl = cpu->kv_layout();
  std::vector<std::byte> gbytes(table.size() * gl.BlockBytes());
  std::vector<std::byte> cbytes(table.size() * cl.BlockBytes());
  ASSERT_TRUE(gpu->ReadKvBlocks(table, gbytes).ok());
  ASSERT_TRUE(cpu->ReadKvBlocks(table, cbytes).ok());
  const auto* g16 = reinterpret_cast<const uint16_t*>(gbytes.data());
  const auto* c32 = reinterpret_cast<const float*>(cbytes.data());
  double num = 0, den = 0;
  for (size_t blk = 0; blk < table.size(); ++blk) {
    for (int l = 0; l < gl.num_layers; ++l)
      for (int kind = 0; kind < 2; ++kind)
        for (int h = 0; h < gl.num_kv_heads; ++h)
          for (int s = 0; s < gl.block_size; ++s) {
            if (blk * gl.block_size + s >= prompt.size()) continue;  // unspecified slots
            for (int d = 0; d < gl.head_dim; ++d) {
              const size_t off = blk * gl.BlockElements() + gl.ElementOffset(l, kind, h, s) + d;
              const double x = BF16ToFloat(g16[off]), y = c32[off];
              num += (x - y) * (x - y);
              den += y * y;
            }
          }
  }
  EXPECT_LT(std::sqrt(num / den), 1e-2) << "GPU KV differs from the CPU KV";

  // Pinned destination (direct DMA) reads the same bytes as pageable.
  void* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned, gbytes.size()), cudaSuccess);
  ASSERT_TRUE(gpu->ReadKvBlocks(table, {static_cast<std::byte*>(pinned), gbytes.size()}).ok());
  EXPECT_EQ(std::memcmp(pinned, gbytes.data(), gbytes.size()), 0);

  // A buffer the caller registers once (a connector's staging area) is
  // read into directly and reads the same bytes.
  const size_t reg_bytes = (gbytes.size() + 4096 + 4095) / 4096 * 4096;
  std::unique_ptr<std::byte, decltype(&std::free)> registered(
      static_cast<std::byte*>(std::aligned_alloc(4096, reg_bytes)), &std::free);
  std::span<std::byte> reg_span(registered.get(), reg_bytes);
  Status reg = gpu->RegisterHostBuffer(reg_span);
  ASSERT_TRUE(reg.ok()) << reg.ToString();
  ASSERT_TRUE(gpu->ReadKvBlocks(table, reg_span.subspan(4096, gbytes.size())).ok());
  EXPECT_EQ(std::memcmp(registered.get() + 4096, gbytes.data(), gbytes.size()), 0);
  ASSERT_TRUE(gpu->UnregisterHostBuffer(reg_span).ok());
  EXPECT_EQ(gpu->UnregisterHostBuffer(reg_span).code(), StatusCode::kNotFound);

  // Write to other blocks (pageable and pinned sources), decode from there.
  std::vector<int32_t> moved = {40, 41, 60}, moved2 = {30, 31, 32};
  ASSERT_TRUE(gpu->WriteKvBlocks(moved, gbytes).ok());
  ASSERT_TRUE(gpu->WriteKvBlocks(moved2, {static_cast<std::byte*>(pinned), gbytes.size()}).ok());
  cudaFreeHost(pinned);
  std::vector<int32_t> next = {static_cast<int32_t>(
      std::max_element(go.LastRow(0).begin(), go.LastRow(0).end()) - go.LastRow(0).begin())};
  ForwardOutput o1, o2, o3;
  ASSERT_TRUE(gpu->Forward({{{next, 40, table}}}, &o1).ok());
  ASSERT_TRUE(gpu->Forward({{{next, 40, moved}}}, &o2).ok());
  ASSERT_TRUE(gpu->Forward({{{next, 40, moved2}}}, &o3).ok());
  EXPECT_EQ(o1.logits, o2.logits);
  EXPECT_EQ(o1.logits, o3.logits);

  // Errors name what is wrong.
  std::vector<std::byte> small(10);
  EXPECT_EQ(gpu->ReadKvBlocks(table, small).code(), StatusCode::kInvalidArgument);
  std::vector<int32_t> bad = {64};
  std::vector<std::byte> one(gl.BlockBytes());
  EXPECT_EQ(gpu->WriteKvBlocks(bad, one).code(), StatusCode::kInvalidArgument);
}

TEST(CudaBackendTest, GpuMemoryUtilizationSizesThePool) {
  SKIP_WITHOUT_GPU();
  size_t free_bytes = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
  const std::string dir = "tests/data/models/tiny-llama3";
  BackendOptions o;
  o.backend = "cuda";
  o.gpu_memory_utilization = 0.3;
  auto b = LoadModel(dir, o);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  const double pool = double((*b)->num_kv_blocks()) * (*b)->kv_layout().BlockBytes();
  const double used_before = double(total - free_bytes);
  EXPECT_LE(pool, 0.3 * total - used_before);
  EXPECT_GT(pool, 0.3 * total - used_before - 0.05 * total);  // weights + scratch are small
  o.gpu_memory_utilization = 1e-9;
  auto none = LoadModel(dir, o);
  EXPECT_EQ(none.status().code(), StatusCode::kResourceExhausted) << none.status().ToString();
}

}  // namespace
}  // namespace crescent::model
