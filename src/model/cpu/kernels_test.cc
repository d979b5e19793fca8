// The fast kernels against their scalar references, on odd shapes that hit
// every tail (K not a multiple of 16, rows not a multiple of 4), all
// weight dtypes and both the GEMV and the sgemm path.
#include "model/cpu/kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "model/cpu/attention.h"
#include "model/weights.h"

namespace crescent::model::cpu {
namespace {

double RelError(const std::vector<float>& out, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (double{out[i]} - ref[i]) * (double{out[i]} - ref[i]);
    den += double{ref[i]} * ref[i];
  }
  return std::sqrt(num / den);
}

std::vector<uint16_t> HalfBits(const std::vector<float>& v, DType dtype) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::kBF16) {
      out[i] = FloatToBF16(v[i]);
    } else {
      // Round-trip through the F16C conversion of the compiler.
      _Float16 h = static_cast<_Float16>(v[i]);
      __builtin_memcpy(&out[i], &h, 2);
    }
  }
  return out;
}

TEST(KernelsTest, MatMulMatchesReferenceForAllPathsAndDtypes) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  ThreadPool pool(2);
  for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
    for (int64_t K : {int64_t{8}, int64_t{16}, int64_t{37}, int64_t{64}, int64_t{200}}) {
      for (int64_t N : {int64_t{1}, int64_t{5}, int64_t{67}}) {
        for (int64_t M : {int64_t{1}, int64_t{3}, int64_t{4}, int64_t{7}, kGemvMaxRows,
                          kGemvMaxRows + 1, int64_t{45}}) {
          std::vector<float> w(N * K), x(M * (K + 3)), bias(N);
          for (float& v : w) v = u(rng);
          for (float& v : x) v = u(rng);
          for (float& v : bias) v = u(rng);
          std::vector<uint16_t> half = HalfBits(w, dtype);
          const void* data = dtype == DType::kF32 ? static_cast<const void*>(w.data())
                                                  : static_cast<const void*>(half.data());
          // y has a wider row stride than N to check ldy; x than K for ldx.
          std::vector<float> y(M * (N + 2), 0.0f), ref(M * (N + 2), 0.0f);
          MatMulTarget t{{dtype, data, N, K}, y.data(), N + 2, bias.data()};
          MatMul(pool, x.data(), M, K + 3, {&t, 1});
          MatMulTarget r = t;
          r.y = ref.data();
          MatMulReference(x.data(), M, K + 3, r);
          // Float accumulation vs double: error bounded by ~K ulp of sum |x w|.
          std::vector<float> wf(N * K);
          WidenRow(dtype, data, N * K, wf.data());
          for (int64_t r = 0; r < M; ++r) {
            for (int64_t n = 0; n < N; ++n) {
              double mag = std::abs(bias[n]);
              for (int64_t k = 0; k < K; ++k) mag += std::abs(x[r * (K + 3) + k] * wf[n * K + k]);
              ASSERT_NEAR(y[r * (N + 2) + n], ref[r * (N + 2) + n], 1e-6 * mag)
                  << DTypeName(dtype) << " M=" << M << " N=" << N << " K=" << K;
            }
          }
        }
      }
    }
  }
}

TEST(KernelsTest, SiluMulAndExpMatchReference) {
  std::vector<float> g(1000), up(1000), out(1000), ref(1000);
  for (int i = 0; i < 1000; ++i) {
    g[i] = (i - 500) * 0.05f;  // [-25, 25]
    up[i] = 1.0f + i * 0.001f;
  }
  SiluMul(g.data(), up.data(), 1000, out.data());
  SiluMulReference(g.data(), up.data(), 1000, ref.data());
  for (int i = 0; i < 1000; ++i) EXPECT_NEAR(out[i], ref[i], 1e-6 * std::abs(ref[i]) + 1e-30);
  std::vector<float> e = g;
  float sum = ExpSubtractSum(e.data(), 1000, 25.0f);
  double sum_ref = 0;
  for (int i = 0; i < 1000; ++i) {
    double r = std::exp(double{g[i]} - 25.0);
    // |x| up to 50: exp's condition number makes ~|x| ulp the attainable.
    EXPECT_NEAR(e[i], r, 1e-5 * r + 1e-37);
    sum_ref += r;
  }
  EXPECT_NEAR(sum, sum_ref, 1e-6 * sum_ref);
}

TEST(KernelsTest, PagedAttentionMatchesReference) {
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int32_t D : {8, 24, 64}) {
    KvBlockLayout layout{2, 2, D, 5, KvDtype::kFloat32};
    const int32_t num_blocks = 12, Hq = 6;
    std::vector<float> pool(num_blocks * layout.BlockElements());
    for (float& v : pool) v = u(rng);
    std::vector<int32_t> table = {7, 2, 11, 0, 5, 9, 3};  // 35 positions
    // Runs of consecutive positions become query tiles (of at most 16):
    // [0], [4, 5], 20 tokens [10, 30) split 16 + 4, [34].
    std::vector<AttentionToken> tokens = {{0, table}, {4, table}, {5, table}};
    for (int32_t p = 10; p < 30; ++p) tokens.push_back({p, table});
    tokens.push_back({34, table});
    std::vector<float> q(tokens.size() * Hq * D);
    for (float& v : q) v = u(rng);
    std::vector<float> out(q.size()), ref(q.size());
    ThreadPool tp(2);
    PagedAttention(tp, tokens, q.data(), Hq, layout, pool.data(), 1, 0.3f, out.data());
    PagedAttentionReference(tokens, q.data(), Hq, layout, pool.data(), 1, 0.3f, ref.data());
    EXPECT_LT(RelError(out, ref), 1e-6) << "D=" << D;
  }
}

TEST(ThreadPoolTest, ParallelForCoversEveryIndexOnce) {
  ThreadPool pool(3);
  for (int round = 0; round < 200; ++round) {
    std::vector<std::atomic<int>> hits(1000);
    pool.ParallelFor(1000, 7, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (auto& h : hits) ASSERT_EQ(h.load(), 1);
  }
}

}  // namespace
}  // namespace crescent::model::cpu
