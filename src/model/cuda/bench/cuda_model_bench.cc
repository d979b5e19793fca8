// cuda_model_bench: decode and prefill throughput of the CUDA backend
// beside the device's limits measured in the same run (docs/benchmarks.md).
//
//   cuda_model_bench --model DIR [--make SHAPE] [--runs 5] [--steps 32]
//                    [--context 512] [--batches 1,8,64,256] [--prompt 2048]
//
// Limits: HBM bandwidth = a 1 GiB device-to-device cudaMemcpy (bytes read +
// written / time, median); the decode limit of a step is (weight bytes +
// KV bytes it must read) / that bandwidth. GEMM rate = cuBLAS bf16 GEMMs of
// the model's own projection shapes at --prompt rows (float32 output, as
// the backend runs them), median; prefill is compared with it in FLOP/s.
// Timings are of Backend::Forward as the engine calls it (logits of the
// last row of every sequence copied to host memory included). Beside them,
// the prefill attention kernel alone at the model's head shape (one layer,
// --prompt tokens), as FLOP/s of causal attention.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "model/backend.h"
#include "model/cuda/kernels.h"
#include "model/make_model.h"

using namespace crescent;
using namespace crescent::model;
using Clock = std::chrono::steady_clock;

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

#define CHECK_CUDA(x)                                                                   \
  do {                                                                                  \
    cudaError_t e = (x);                                                                \
    if (e != cudaSuccess) {                                                             \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

// Device-to-device copy bandwidth, bytes read + written per second.
double CopyBandwidth(int runs) {
  const size_t n = size_t{1} << 30;
  void *a, *b;
  CHECK_CUDA(cudaMalloc(&a, n));
  CHECK_CUDA(cudaMalloc(&b, n));
  CHECK_CUDA(cudaMemset(a, 1, n));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> bw;
  for (int r = 0; r < runs + 1; ++r) {
    cudaEventRecord(e0);
    CHECK_CUDA(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    if (r > 0) bw.push_back(2.0 * n / (ms / 1e3));
  }
  cudaFree(a);
  cudaFree(b);
  return Median(bw);
}

// cuBLAS rate (FLOP/s) over the given GEMM shapes {N, K} at M rows.
double GemmRate(int64_t M, const std::vector<std::pair<int64_t, int64_t>>& shapes, int runs) {
  cublasHandle_t h;
  cublasCreate(&h);
  size_t max_w = 0, max_k = 0, max_n = 0;
  for (auto [N, K] : shapes) {
    max_w = std::max<size_t>(max_w, N * K);
    max_k = std::max<size_t>(max_k, K);
    max_n = std::max<size_t>(max_n, N);
  }
  void *w, *x, *y;
  CHECK_CUDA(cudaMalloc(&w, max_w * 2));
  CHECK_CUDA(cudaMalloc(&x, M * max_k * 2));
  CHECK_CUDA(cudaMalloc(&y, M * max_n * 4));
  // Random-ish bits, not zeros (zeros run faster than real data).
  std::vector<uint16_t> host(max_w);
  for (size_t i = 0; i < host.size(); ++i) host[i] = 0x3c00 + (i * 2654435761u >> 20) % 0x300;
  CHECK_CUDA(cudaMemcpy(w, host.data(), max_w * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(x, host.data(), std::min(max_w, M * max_k) * 2, cudaMemcpyHostToDevice));
  const float one = 1, zero = 0;
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  double flops = 0;
  for (auto [N, K] : shapes) flops += 2.0 * M * N * K;
  std::vector<double> rate;
  for (int r = 0; r < runs + 1; ++r) {
    cudaEventRecord(e0);
    for (auto [N, K] : shapes) {
      cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF, K, x, CUDA_R_16BF,
                   K, &zero, y, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    if (r > 0) rate.push_back(flops / (ms / 1e3));
  }
  cudaFree(w);
  cudaFree(x);
  cudaFree(y);
  cublasDestroy(h);
  return Median(rate);
}

// The prefill attention kernel alone at the model's head shape: one
// T-token sequence attending causally over one layer's bf16 K/V in the
// paged pool (blocks of 16), q bf16 as a prefill-only batch passes it;
// median of `runs` launches, as causal FLOP/s (4 * Hq * D * T(T+1)/2).
double AttentionRate(const ModelConfig& c, int T, int runs, double* ms_out) {
  using cuda::bf16_t;
  const int B = 16, D = c.head_dim, Hq = c.num_heads, Hkv = c.num_kv_heads;
  const int blocks = (T + B - 1) / B;
  const size_t pool_elems = size_t{1} * blocks * 2 * Hkv * B * D;
  const size_t q_elems = size_t{1} * T * Hq * D;
  void *pool, *q, *out, *tables, *tiles;
  CHECK_CUDA(cudaMalloc(&pool, pool_elems * 2));
  CHECK_CUDA(cudaMalloc(&q, q_elems * 2));
  CHECK_CUDA(cudaMalloc(&out, q_elems * 2));
  // Random bf16 in about [-2, 2] (not zeros: they run faster than real data).
  std::vector<uint16_t> host(std::max(pool_elems, q_elems));
  uint32_t x = 12345;
  for (uint16_t& h : host) {
    x = x * 1664525u + 1013904223u;
    h = static_cast<uint16_t>(((x >> 16) & 0x8000) | (0x3c00 + ((x >> 8) % 0x400)));
  }
  CHECK_CUDA(cudaMemcpy(pool, host.data(), pool_elems * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(q, host.data(), q_elems * 2, cudaMemcpyHostToDevice));
  std::vector<int32_t> table(blocks);
  for (int i = 0; i < blocks; ++i) table[i] = i;
  std::vector<cuda::PrefillTile> plan;
  for (int i = 0; i < T; i += cuda::kPrefillTileRows) {
    plan.push_back({i, i, std::min(cuda::kPrefillTileRows, T - i), 0});
  }
  std::reverse(plan.begin(), plan.end());  // longest first, as the backend plans them
  CHECK_CUDA(cudaMalloc(&tables, table.size() * 4));
  CHECK_CUDA(cudaMalloc(&tiles, plan.size() * sizeof(cuda::PrefillTile)));
  CHECK_CUDA(cudaMemcpy(tables, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(tiles, plan.data(), plan.size() * sizeof(cuda::PrefillTile),
                        cudaMemcpyHostToDevice));
  cuda::AttentionArgs a{nullptr,
                        0,
                        static_cast<const bf16_t*>(q),
                        static_cast<const bf16_t*>(pool),
                        static_cast<const int32_t*>(tables),
                        static_cast<bf16_t*>(out),
                        Hq, Hkv, D, B, /*L=*/1, /*layer=*/0,
                        static_cast<float>(1.0 / std::sqrt(double(D)))};
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> ms_all;
  for (int r = 0; r < runs + 1; ++r) {
    cudaEventRecord(e0);
    CHECK_CUDA(cuda::LaunchPrefillAttention(a, static_cast<const cuda::PrefillTile*>(tiles),
                                            static_cast<int32_t>(plan.size()), nullptr));
    cudaEventRecord(e1);
    CHECK_CUDA(cudaEventSynchronize(e1));
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    if (r > 0) ms_all.push_back(ms);
  }
  for (void* p : {pool, q, out, tables, tiles}) cudaFree(p);
  *ms_out = Median(ms_all);
  return 4.0 * Hq * D * (double(T) * (T + 1) / 2) / (*ms_out / 1e3);
}

std::vector<int32_t> Prompt(int n, int vocab, int seed) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = static_cast<int32_t>((i * 7919ll + seed * 104729ll) % vocab);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir, make_shape;
  int runs = 5, steps = 32, context = 512, prompt_len = 2048;
  std::vector<int> batches = {1, 8, 64, 256};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--model") dir = next();
    else if (a == "--make") make_shape = next();
    else if (a == "--runs") runs = std::stoi(next());
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--context") context = std::stoi(next());
    else if (a == "--prompt") prompt_len = std::stoi(next());
    else if (a == "--batches") {
      batches.clear();
      std::string s = next();
      for (size_t p = 0; p < s.size();) {
        size_t q = s.find(',', p);
        if (q == std::string::npos) q = s.size();
        batches.push_back(std::stoi(s.substr(p, q - p)));
        p = q + 1;
      }
    } else {
      std::fprintf(stderr, "usage: cuda_model_bench --model DIR [--make SHAPE] [--runs N] "
                           "[--steps N] [--context N] [--batches 1,8] [--prompt N]\n");
      return 2;
    }
  }
  if (!make_shape.empty()) {
    Status made = MakeModel({make_shape, dir, 1, ""});
    if (!made.ok()) {
      std::fprintf(stderr, "%s\n", made.ToString().c_str());
      return 1;
    }
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const int max_batch = *std::max_element(batches.begin(), batches.end());
  auto config = LoadModelConfig(dir);
  if (!config.ok()) return std::fprintf(stderr, "%s\n", config.status().ToString().c_str()), 1;
  const ModelConfig& c = *config;
  const int B = 16;
  const int per_seq_blocks = (std::max(context + 3 * steps + 1, prompt_len) + B - 1) / B;
  BackendOptions bo;
  bo.backend = "cuda";
  bo.kv_block_size = B;
  bo.num_kv_blocks = per_seq_blocks * max_batch;
  bo.max_num_batched_tokens = std::max(prompt_len, 4096);
  auto loaded = LoadModel(dir, bo);
  if (!loaded.ok()) return std::fprintf(stderr, "%s\n", loaded.status().ToString().c_str()), 1;
  Backend& backend = **loaded;

  const int64_t H = c.hidden_size, I = c.intermediate_size, D = c.head_dim;
  const int64_t QD = int64_t{c.num_heads} * D, KD = int64_t{c.num_kv_heads} * D;
  const double layer_params = double(H) * (QD + 2 * KD) + double(QD) * H + 3.0 * H * I;
  const double weight_bytes = 2 * (c.num_layers * layer_params + double(c.vocab_size) * H);
  const double kv_bytes_per_token = 2.0 * c.num_layers * 2 * KD;
  const double bw = CopyBandwidth(runs);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {QD + 2 * KD, H}, {H, QD}, {2 * I, H}, {H, I}};
  const double gemm = GemmRate(prompt_len, shapes, runs);
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  std::printf("model %s: %d layers, H %lld, %.1f MB of weights read per decode step\n",
              dir.c_str(), c.num_layers, static_cast<long long>(H), weight_bytes / 1e6);
  std::printf("HBM copy bandwidth (read+write, median of %d): %.0f GB/s\n", runs, bw / 1e9);
  std::printf("cuBLAS bf16 GEMM, model shapes at %d rows (median of %d): %.0f TFLOP/s (",
              prompt_len, runs, gemm / 1e12);
  for (auto [N, K] : shapes) {
    std::printf(" %lldx%lld: %.0f", static_cast<long long>(N), static_cast<long long>(K),
                GemmRate(prompt_len, {{N, K}}, runs) / 1e12);
  }
  std::printf(" )\n");

  ForwardOutput out;
  for (int batch : batches) {
    std::vector<std::vector<int32_t>> seqs(batch), tables(batch);
    for (int s = 0; s < batch; ++s) {
      seqs[s] = Prompt(context, c.vocab_size, s);
      for (int j = 0; j < per_seq_blocks; ++j) tables[s].push_back(s * per_seq_blocks + j);
    }
    // Prefill the contexts, up to 8192 tokens per call.
    for (int s0 = 0; s0 < batch;) {
      ForwardBatch pre;
      int tokens = 0;
      for (; s0 < batch && tokens + context <= std::max(8192, context); ++s0, tokens += context)
        pre.sequences.push_back({seqs[s0], 0, tables[s0]});
      Status st = backend.Forward(pre, &out);
      if (!st.ok()) return std::fprintf(stderr, "%s\n", st.ToString().c_str()), 1;
    }
    // Three passes of `steps` steps: logits of every sequence to the host,
    // logits of sequence 0 only (the same weight and KV reads on the device
    // without the batch x vocabulary float32 copy), and every sequence's
    // next token drawn on the device (greedy; token ids to the host: what
    // the engine runs on a backend with device sampling).
    const SamplingRequest greedy;
    for (int pass = 0; pass < 3; ++pass) {
      std::vector<double> step_s;
      for (int step = 0; step < steps; ++step) {
        ForwardBatch dec;
        for (int s = 0; s < batch; ++s) {
          seqs[s].push_back(static_cast<int32_t>((step * 31 + s) % c.vocab_size));
          dec.sequences.push_back({std::span(seqs[s]).last(1),
                                   static_cast<int32_t>(seqs[s].size() - 1), tables[s],
                                   pass != 1 || s == 0 ? LogitsMode::kLast : LogitsMode::kNone,
                                   pass == 2 ? &greedy : nullptr});
        }
        auto t0 = Clock::now();
        Status st = backend.Forward(dec, &out);
        if (!st.ok()) return std::fprintf(stderr, "%s\n", st.ToString().c_str()), 1;
        if (step >= 2) step_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      const double t = Median(step_s);
      const double ctx_avg = context + steps * (pass + 0.5);  // the context grows each pass
      const double bytes = weight_bytes + batch * ctx_avg * kv_bytes_per_token;
      const double limit = bytes / bw;
      std::printf(
          "decode batch %3d, context %d, %s: step %.3f ms = %8.0f tok/s; HBM limit %.3f ms "
          "(%.0f MB/step) -> %.0f%% of the limit\n",
          batch, context,
          pass == 0 ? "all logits to host" : (pass == 1 ? "logits of 1 row     " : "greedy on device    "),
          t * 1e3,
          batch / t, limit * 1e3, bytes / 1e6, 100 * limit / t);
    }
  }

  if (cuda::PrefillAttentionSupports(c.head_dim)) {
    double attn_ms = 0;
    const double rate = AttentionRate(c, prompt_len, std::max(runs, 10), &attn_ms);
    std::printf("prefill attention kernel alone, %d tokens, %d/%d heads of %d: %.3f ms per layer "
                "= %.0f TFLOP/s of causal attention\n",
                prompt_len, c.num_heads, c.num_kv_heads, static_cast<int>(c.head_dim), attn_ms,
                rate / 1e12);
  }

  // Prefill of one prompt: projections + attention + lm_head of the last row.
  std::vector<int32_t> prompt = Prompt(prompt_len, c.vocab_size, 99);
  std::vector<int32_t> table;
  for (int j = 0; j < per_seq_blocks; ++j) table.push_back(j);
  std::vector<double> pre_s;
  for (int r = 0; r < runs + 1; ++r) {
    auto t0 = Clock::now();
    Status st = backend.Forward({{{prompt, 0, table}}}, &out);
    if (!st.ok()) return std::fprintf(stderr, "%s\n", st.ToString().c_str()), 1;
    if (r > 0) pre_s.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  const double t = Median(pre_s);
  const double gemm_flops = 2.0 * prompt_len * c.num_layers * layer_params;
  const double attn_flops =
      4.0 * c.num_layers * c.num_heads * D * (double(prompt_len) * (prompt_len + 1) / 2);
  std::printf(
      "prefill %d tokens: %.2f ms = %.0f tok/s; %.0f TFLOP/s of projections (+%.0f with "
      "attention) = %.0f%% of the cuBLAS rate\n",
      prompt_len, t * 1e3, prompt_len / t, gemm_flops / t / 1e12,
      (gemm_flops + attn_flops) / t / 1e12, 100 * (gemm_flops / t) / gemm);
  return 0;
}
