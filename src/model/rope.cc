#include "model/rope.h"

#include <cmath>

#include "model/weights.h"

namespace crescent::model {

std::vector<float> RopeInverseFrequencies(const ModelConfig& config) {
  const int half = config.head_dim / 2;
  const RopeConfig& r = config.rope;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), float32.
    float exponent = static_cast<float>(2 * i) / static_cast<float>(config.head_dim);
    float p = static_cast<float>(
        std::pow(static_cast<double>(static_cast<float>(r.theta)), static_cast<double>(exponent)));
    inv[i] = 1.0f / p;
  }
  if (r.type == RopeConfig::Type::kLinear) {
    for (float& f : inv) f = static_cast<float>(f / r.factor);
  } else if (r.type == RopeConfig::Type::kLlama3) {
    // transformers' _compute_llama3_parameters, in the same order of
    // operations.
    const double old_len = static_cast<double>(r.original_max_position);
    const double low_wavelen = old_len / r.low_freq_factor;
    const double high_wavelen = old_len / r.high_freq_factor;
    for (float& f : inv) {
      const float wavelen = static_cast<float>(2 * M_PI) / f;
      float scaled = wavelen > low_wavelen ? static_cast<float>(f / r.factor) : f;
      const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      if (medium) {
        const float smooth = static_cast<float>((old_len / wavelen - r.low_freq_factor) /
                                                (r.high_freq_factor - r.low_freq_factor));
        scaled = (1.0f - smooth) * static_cast<float>(scaled / r.factor) + smooth * scaled;
      }
      f = scaled;
    }
  }
  // transformers keeps inv_freq in a buffer that is cast with the model:
  // a checkpoint loaded in its bfloat16 (float16) dtype rotates by
  // frequencies rounded to that type, even when the math is float32. The
  // reference logits are computed so; rounding here matches them to ~1e-7
  // instead of ~1e-3 at position 20.
  if (config.torch_dtype == "bfloat16") {
    for (float& f : inv) f = BF16ToFloat(FloatToBF16(f));
  } else if (config.torch_dtype == "float16") {
    for (float& f : inv) f = static_cast<float>(static_cast<_Float16>(f));
  }
  return inv;
}

void RopeCosSin(const std::vector<float>& inv_freq, int64_t position, float* cos_out,
                float* sin_out) {
  const float pos = static_cast<float>(position);
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const float angle = pos * inv_freq[i];  // float32 product, as torch
    cos_out[i] = static_cast<float>(std::cos(static_cast<double>(angle)));
    sin_out[i] = static_cast<float>(std::sin(static_cast<double>(angle)));
  }
}

void RopeApply(float* x, int head_dim, const float* cos_tab, const float* sin_tab) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cos_tab[i] - b * sin_tab[i];
    x[i + half] = b * cos_tab[i] + a * sin_tab[i];
  }
}

}  // namespace crescent::model
