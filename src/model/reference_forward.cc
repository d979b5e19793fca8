#include "model/reference_forward.h"

#include <cmath>

#include "model/rope.h"

namespace crescent::model {
namespace {

using Vec = std::vector<double>;

// y = W x (+ b); W [rows][cols] in any float dtype.
Vec Linear(const TensorView* w, const TensorView* b, const Vec& x) {
  const std::vector<float> wf = ToFloat(*w);
  const int64_t rows = w->shape[0], cols = w->shape[1];
  Vec y(rows, 0.0);
  std::vector<float> bf = b ? ToFloat(*b) : std::vector<float>();
  for (int64_t r = 0; r < rows; ++r) {
    double acc = b ? bf[r] : 0.0;
    for (int64_t c = 0; c < cols; ++c) acc += wf[r * cols + c] * x[c];
    y[r] = acc;
  }
  return y;
}

Vec RmsNorm(const Vec& x, const TensorView* w, double eps, size_t offset = 0, size_t n = 0) {
  if (n == 0) n = x.size();
  const std::vector<float> wf = ToFloat(*w);
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += x[offset + i] * x[offset + i];
  const double inv = 1.0 / std::sqrt(ss / n + eps);
  Vec y(n);
  for (size_t i = 0; i < n; ++i) y[i] = wf[i] * x[offset + i] * inv;
  return y;
}

}  // namespace

StatusOr<std::vector<std::vector<float>>> ReferenceForward(const ModelConfig& c,
                                                           const ModelWeights& w,
                                                           const std::vector<int32_t>& tokens) {
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int64_t H = c.hidden_size, D = c.head_dim, Hq = c.num_heads, Hkv = c.num_kv_heads;
  const std::vector<float> inv_freq = RopeInverseFrequencies(c);
  const std::vector<float> embed = ToFloat(*w.embed);
  std::vector<Vec> x(T, Vec(H));
  for (int64_t t = 0; t < T; ++t) {
    if (tokens[t] < 0 || tokens[t] >= c.vocab_size) {
      return InvalidArgumentError("token id " + std::to_string(tokens[t]) + " out of range");
    }
    for (int64_t i = 0; i < H; ++i) x[t][i] = embed[tokens[t] * H + i];
  }
  for (const LayerWeights& lw : w.layers) {
    std::vector<Vec> q(T), k(T), v(T);
    for (int64_t t = 0; t < T; ++t) {
      Vec xn = RmsNorm(x[t], lw.input_norm, c.rms_norm_eps);
      q[t] = Linear(lw.q_proj, lw.q_bias, xn);
      k[t] = Linear(lw.k_proj, lw.k_bias, xn);
      v[t] = Linear(lw.v_proj, lw.v_bias, xn);
      std::vector<float> cs(D / 2), sn(D / 2);
      RopeCosSin(inv_freq, t, cs.data(), sn.data());
      auto rotate = [&](Vec& vec, int64_t heads, const TensorView* norm) {
        for (int64_t h = 0; h < heads; ++h) {
          if (norm) {
            Vec n = RmsNorm(vec, norm, c.rms_norm_eps, h * D, D);
            for (int64_t d = 0; d < D; ++d) vec[h * D + d] = n[d];
          }
          for (int64_t i = 0; i < D / 2; ++i) {
            double a = vec[h * D + i], b = vec[h * D + i + D / 2];
            vec[h * D + i] = a * cs[i] - b * sn[i];
            vec[h * D + i + D / 2] = b * cs[i] + a * sn[i];
          }
        }
      };
      rotate(q[t], Hq, lw.q_norm);
      rotate(k[t], Hkv, lw.k_norm);
    }
    for (int64_t t = 0; t < T; ++t) {
      Vec attn(Hq * D, 0.0);
      for (int64_t h = 0; h < Hq; ++h) {
        const int64_t g = h / (Hq / Hkv);
        Vec s(t + 1);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += q[t][h * D + d] * k[j][g * D + d];
          s[j] = dot / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, s[j]);
        }
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t d = 0; d < D; ++d) attn[h * D + d] += s[j] / sum * v[j][g * D + d];
      }
      Vec o = Linear(lw.o_proj, lw.o_bias, attn);
      for (int64_t i = 0; i < H; ++i) x[t][i] += o[i];
      Vec xn = RmsNorm(x[t], lw.post_norm, c.rms_norm_eps);
      Vec g = Linear(lw.gate_proj, lw.gate_bias, xn);
      Vec u = Linear(lw.up_proj, lw.up_bias, xn);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      Vec dn = Linear(lw.down_proj, lw.down_bias, g);
      for (int64_t i = 0; i < H; ++i) x[t][i] += dn[i];
    }
  }
  std::vector<std::vector<float>> logits(T);
  for (int64_t t = 0; t < T; ++t) {
    Vec l = Linear(w.lm_head, nullptr, RmsNorm(x[t], w.final_norm, c.rms_norm_eps));
    logits[t].assign(l.begin(), l.end());
  }
  return logits;
}

}  // namespace crescent::model
