// model_bench: decode and prefill throughput of the CPU backend beside the
// memory-bandwidth limit measured in the same run (docs/benchmarks.md).
//
//   model_bench --model DIR [--threads 2] [--runs 5] [--decode-steps 16]
//               [--prompt 512] [--batches 1,8|none] [--make SHAPE]
//
// Bandwidth: the median of `runs` passes that read every weight byte of the
// checkpoint once (AVX-512 sum over the mapped tensors, same threads), so
// the limit is "bytes of weights read per decode step / that bandwidth".
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "model/backend.h"
#include "model/make_model.h"
#include "model/cpu/thread_pool.h"
#include "model/safetensors.h"

using namespace crescent;
using namespace crescent::model;
using Clock = std::chrono::steady_clock;

namespace {

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Reads every byte of the checkpoint's tensors once; returns GB/s.
double ReadBandwidth(const Checkpoint& ckpt, cpu::ThreadPool& pool, uint64_t* bytes_out) {
  std::vector<const TensorView*> tensors;
  for (const auto& [name, t] : ckpt.tensors()) tensors.push_back(&t);
  // Split into 1 MiB pieces so both threads share the work evenly.
  struct Piece {
    const char* p;
    size_t n;
  };
  std::vector<Piece> pieces;
  uint64_t total = 0;
  for (const TensorView* t : tensors) {
    for (size_t off = 0; off < t->bytes; off += 1 << 20) {
      pieces.push_back(
          {static_cast<const char*>(t->data) + off, std::min<size_t>(1 << 20, t->bytes - off)});
    }
    total += t->bytes;
  }
  std::vector<double> sink(pool.num_threads(), 0);
  auto t0 = Clock::now();
  pool.ParallelFor(static_cast<int64_t>(pieces.size()), 4, [&](int64_t b, int64_t e, int th) {
    __m512i acc = _mm512_setzero_si512();
    for (int64_t i = b; i < e; ++i) {
      const char* p = pieces[i].p;
      size_t n = pieces[i].n & ~size_t{63};
      for (size_t off = 0; off < n; off += 64) {
        acc = _mm512_add_epi32(acc, _mm512_loadu_si512(p + off));
      }
    }
    sink[th] += _mm512_reduce_add_epi32(acc);
  });
  auto t1 = Clock::now();
  *bytes_out = total;
  if (std::accumulate(sink.begin(), sink.end(), 0.0) == 42) std::puts("");
  return total / Seconds(t0, t1) / 1e9;
}

std::vector<int32_t> Prompt(int n, int vocab, int seed) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = (i * 7919 + seed * 104729) % vocab;
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  int threads = 2, runs = 5, decode_steps = 16, prompt_len = 512;
  std::vector<int> batches = {1, 8};
  std::string make_shape;  // --make SHAPE: write a random model into --model first
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--model")
      dir = next();
    else if (a == "--make") make_shape = next();
    else if (a == "--threads")
      threads = std::stoi(next());
    else if (a == "--runs")
      runs = std::stoi(next());
    else if (a == "--decode-steps")
      decode_steps = std::stoi(next());
    else if (a == "--prompt")
      prompt_len = std::stoi(next());
    else if (a == "--batches") {
      batches.clear();
      std::string s = next();
      if (s == "none") s.clear();  // prefill only
      for (size_t p = 0; p < s.size();) {
        size_t q = s.find(',', p);
        if (q == std::string::npos) q = s.size();
        batches.push_back(std::stoi(s.substr(p, q - p)));
        p = q + 1;
      }
    } else {
      std::fprintf(stderr,
                   "usage: model_bench --model DIR [--threads N] [--runs N] "
                   "[--decode-steps N] [--prompt N] [--batches 1,8|none] [--make SHAPE]\n");
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
  auto ckpt = Checkpoint::Open(dir);
  if (!ckpt.ok()) {
    std::fprintf(stderr, "%s\n", ckpt.status().ToString().c_str());
    return 1;
  }
  BackendOptions bo;
  bo.num_threads = threads;
  bo.kv_cache_bytes = 4ull << 30;
  auto loaded = LoadModel(dir, bo);
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.status().ToString().c_str());
    return 1;
  }
  Backend& backend = **loaded;
  const ModelConfig& c = backend.config();
  const int B = backend.kv_layout().block_size;
  cpu::ThreadPool pool(threads);

  // Weight bytes one decode step reads: every matrix once (the embedding
  // only through lm_head when tied; a few rows otherwise).
  uint64_t all_bytes = 0, step_bytes = 0;
  for (const auto& [name, t] : (*ckpt)->tensors()) {
    all_bytes += t.bytes;
    if (name == "model.embed_tokens.weight" && !c.tie_word_embeddings) continue;
    step_bytes += t.bytes;
  }
  uint64_t scratch;
  ReadBandwidth(**ckpt, pool, &scratch);  // warm the page cache
  std::vector<double> bw;
  for (int r = 0; r < runs; ++r) bw.push_back(ReadBandwidth(**ckpt, pool, &scratch));
  const double bandwidth = Median(bw);
  const double limit = bandwidth * 1e9 / step_bytes;
  std::printf("model %s: %.1f MB of weights, %.1f MB read per decode step\n", dir.c_str(),
              all_bytes / 1e6, step_bytes / 1e6);
  std::printf(
      "read bandwidth (%d threads, median of %d): %.1f GB/s -> decode "
      "limit %.1f "
      "steps/s\n",
      threads, runs, bandwidth, limit);

  // Decode: `batch` sequences with short prompts, then decode_steps steps
  // of one token each; median step time over runs.
  int32_t next_block = 0;
  auto blocks_for = [&](int tokens) {
    std::vector<int32_t> t;
    for (int i = 0; i < (tokens + B - 1) / B; ++i) t.push_back(next_block++);
    return t;
  };
  ForwardOutput out;
  for (int batch : batches) {
    std::vector<double> step_s;
    for (int r = 0; r < runs; ++r) {
      next_block = 0;
      std::vector<std::vector<int32_t>> seqs, tables;
      for (int s = 0; s < batch; ++s) {
        seqs.push_back(Prompt(16 + s, c.vocab_size, s));
        tables.push_back(blocks_for(16 + s + decode_steps + 1));
      }
      ForwardBatch prefill;
      for (int s = 0; s < batch; ++s) prefill.sequences.push_back({seqs[s], 0, tables[s]});
      if (!backend.Forward(prefill, &out).ok()) return 1;
      auto t0 = Clock::now();
      for (int step = 0; step < decode_steps; ++step) {
        ForwardBatch dec;
        for (int s = 0; s < batch; ++s) {
          auto row = out.LastRow(s);
          seqs[s].push_back(
              static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin()));
        }
        for (int s = 0; s < batch; ++s) {
          dec.sequences.push_back(
              {std::span(seqs[s]).last(1), static_cast<int32_t>(seqs[s].size() - 1), tables[s]});
        }
        if (!backend.Forward(dec, &out).ok()) return 1;
      }
      step_s.push_back(Seconds(t0, Clock::now()) / decode_steps);
    }
    const double steps = 1.0 / Median(step_s);
    std::printf(
        "decode batch %d: %.2f steps/s = %.1f tok/s (%.0f%% of the "
        "bandwidth limit "
        "%.1f steps/s)\n",
        batch, steps, steps * batch, 100.0 * steps / limit, limit);
  }

  // Prefill of one prompt_len-token prompt.
  std::vector<double> pre_s;
  for (int r = 0; prompt_len > 0 && r < std::max(1, runs / 2); ++r) {
    next_block = 0;
    auto prompt = Prompt(prompt_len, c.vocab_size, 99);
    auto table = blocks_for(prompt_len);
    auto t0 = Clock::now();
    if (!backend.Forward({{{prompt, 0, table}}}, &out).ok()) return 1;
    pre_s.push_back(Seconds(t0, Clock::now()));
  }
  if (pre_s.empty()) return 0;
  std::printf("prefill %d tokens: %.3f s = %.1f tok/s (median of %zu)\n", prompt_len, Median(pre_s),
              prompt_len / Median(pre_s), pre_s.size());
  return 0;
}
