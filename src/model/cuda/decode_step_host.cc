// CudaBackend's side of the persistent batch-1 decode step (decode_step.h):
// its buffers and layer table, the launch, and the optional timing and
// tracing (CRESCENT_STEP_TRACE=events | 1).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "model/cuda/backend_impl.h"
#include "model/cuda/cuda_util.h"
#include "model/rope.h"

namespace crescent::model::cuda {

Status CudaBackend::InitDecodeStep() {
  const ModelConfig& c = config_;
  const char* env = std::getenv("CRESCENT_CUDA_DECODE_STEP");
  if ((env && std::string_view(env) == "0") || profile_.enabled()) return OkStatus();
  if (!DecodeStepSupports(c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
                          c.intermediate_size, layers_[0].gate_up_bias != nullptr)) {
    return OkStatus();
  }
  int device = 0, cooperative = 0;
  RETURN_IF_CUDA_ERROR(cudaGetDevice(&device), "select a device");
  RETURN_IF_CUDA_ERROR(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device),
                       "read cooperative launch support");
  if (!cooperative || c.hidden_size > 256 * num_sms_) return OkStatus();  // kMaxResidRows
  std::vector<StepLayer> table;
  for (const DeviceLayer& w : layers_) {
    table.push_back({w.qkv, w.o, w.gate_up, w.down, w.input_norm, w.post_norm, w.q_norm, w.k_norm,
                     w.qkv_bias, w.o_bias, w.down_bias});
  }
  RETURN_IF_ERROR(step_layers_.Allocate(table.size() * sizeof(StepLayer), "decode step layers"));
  RETURN_IF_CUDA_ERROR(cudaMemcpy(step_layers_.as<void>(), table.data(),
                                  table.size() * sizeof(StepLayer), cudaMemcpyHostToDevice),
                       "upload the decode step's layer table");
  const int64_t exchange_words = DecodeStepExchangeWords(
      c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.intermediate_size);
  RETURN_IF_ERROR(step_sync_.Allocate(static_cast<size_t>(exchange_words) * 8,
                                      "decode step exchange buffers"));
  RETURN_IF_CUDA_ERROR(cudaMemset(step_sync_.as<void>(), 0, step_sync_.bytes()),
                       "clear the decode step exchange buffers");
  step_epoch_ = 0;
  inv_freq_host_ = RopeInverseFrequencies(c);
  RETURN_IF_ERROR(step_partial_.Allocate(
      static_cast<size_t>(
          DecodeStepPartialFloats(c.num_heads, c.num_kv_heads, c.head_dim, num_sms_)) * 4,
      "decode step partials"));
  if (const char* t = std::getenv("CRESCENT_STEP_TRACE"); t && std::string_view(t) == "events") {
    for (cudaEvent_t& e : step_events_) {
      RETURN_IF_CUDA_ERROR(cudaEventCreate(&e), "create a step timing event");
    }
  } else if (std::getenv("CRESCENT_STEP_TRACE")) {
    const size_t words = static_cast<size_t>(DecodeStepTraceWords(c.num_layers, num_sms_));
    RETURN_IF_ERROR(step_trace_.Allocate(words * 8, "decode step trace"));
    step_trace_host_.resize(words);
  }
  step_enabled_ = true;
  return OkStatus();
}

// Sums per stage kind k (0 q/k/v, 1 attention, 2 o_proj, 3 gate/up, 4
// down), all layers: step_trace_ns_[k] the mean block's wait for its inputs
// (from the end of its previous stage), [5 + k] the mean block's work (to
// its outputs stored), [10 + k] the critical path (last block's end minus
// the previous stage's last end); [15] lm_head, [16] the whole kernel.
// step_trace_waits_: mean block waits for tiles per matrix kind.
void CudaBackend::AddStepTrace() {
  if (cudaStreamSynchronize(stream_) != cudaSuccess) return;
  if (cudaMemcpy(step_trace_host_.data(), step_trace_.as<void>(), step_trace_host_.size() * 8,
                 cudaMemcpyDeviceToHost) != cudaSuccess) {
    return;
  }
  const ModelConfig& c = config_;
  const int64_t blocks = DecodeStepBlocks(c.num_heads, c.num_kv_heads, c.head_dim, num_sms_);
  const int64_t stages = 5 * c.num_layers;
  const uint64_t* t = step_trace_host_.data();
  const uint64_t start = t[stages * blocks * 2], end = t[stages * blocks * 2 + 1];
  std::vector<uint64_t> prev_end(blocks, start);
  uint64_t prev_last = start;
  for (int64_t s = 0; s < stages; ++s) {
    const int k = static_cast<int>(s % 5);
    double in = 0, work = 0;
    int64_t n = 0;
    uint64_t last = prev_last;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint64_t ready = t[(s * blocks + b) * 2], done = t[(s * blocks + b) * 2 + 1];
      if (done == 0) continue;
      last = std::max(last, done);
      if (ready != 0) {  // blocks without an attention item record no inputs
        in += static_cast<double>(ready) - static_cast<double>(prev_end[b]);
        work += static_cast<double>(done) - static_cast<double>(ready);
        ++n;
      }
      prev_end[b] = done;
    }
    if (n > 0) {
      step_trace_ns_[k] += in / n;
      step_trace_ns_[5 + k] += work / n;
    }
    step_trace_ns_[10 + k] += static_cast<double>(last - prev_last);
    prev_last = last;
  }
  const uint64_t* waits = t + stages * blocks * 2 + 2;
  for (int k = 0; k < 7; ++k) {
    double sum = 0;
    for (int64_t b = 0; b < blocks; ++b) sum += static_cast<double>(waits[b * 8 + k]);
    step_trace_waits_[k] += sum / blocks;
  }
  step_trace_ns_[15] += static_cast<double>(end - prev_last);
  step_trace_ns_[16] += static_cast<double>(end - start);
  ++step_trace_steps_;
}

void CudaBackend::PrintStepTrace() const {
  if (!step_event_ms_.empty()) {
    std::vector<float> v = step_event_ms_;
    std::sort(v.begin(), v.end());
    std::fprintf(stderr, "step events: %zu launches, median %.1f us (device time of the step)\n",
                 v.size(), v[v.size() / 2] * 1e3);
  }
  if (step_trace_steps_ == 0) return;
  const double n = static_cast<double>(step_trace_steps_) * 1e3;  // -> us per step
  const char* kinds[5] = {"q/k/v", "attention", "o_proj", "gate/up", "down"};
  std::fprintf(stderr, "step trace (%lld steps, us per step): kernel %.1f, lm_head %.1f\n",
               static_cast<long long>(step_trace_steps_), step_trace_ns_[16] / n,
               step_trace_ns_[15] / n);
  std::fprintf(stderr,
               "step trace: mean block waits for tiles: q/k/v %.1f o %.1f gate/up %.1f down %.1f "
               "lm_head %.1f; producer waits for slots %.1f\n",
               step_trace_waits_[0] / n, step_trace_waits_[2] / n, step_trace_waits_[3] / n,
               step_trace_waits_[4] / n, step_trace_waits_[5] / n, step_trace_waits_[6] / n);
  for (int k = 0; k < 5; ++k) {
    std::fprintf(stderr,
                 "step trace: %-10s critical path %.1f (all layers); mean block: waits for "
                 "inputs %.1f, work %.1f\n",
                 kinds[k], step_trace_ns_[10 + k] / n, step_trace_ns_[k] / n,
                 step_trace_ns_[5 + k] / n);
  }
}

Status CudaBackend::RunDecodeStep(bool want_logits) {
  const ModelConfig& c = config_;
  const int32_t* dm = meta_.as<int32_t>();
  DecodeStepArgs a{};
  a.layers = step_layers_.as<StepLayer>();
  a.embed = embed_;
  a.lm_head = lm_head_;
  a.final_norm = final_norm_;
  a.rope = reinterpret_cast<const float*>(dm + meta_at_.rope);
  a.token = dm + meta_at_.ids;
  a.position = dm + meta_at_.positions;
  a.block_table = dm + meta_at_.tables;
  a.kv_pool = kv_pool_.as<bf16_t>();
  a.partial = step_partial_.as<float>();
  a.logits = logits_.as<float>();
  a.exchange = step_sync_.as<uint64_t>();
  a.head_counters = a.exchange + DecodeStepExchangeWords(c.hidden_size, c.num_heads,
                                                         c.num_kv_heads, c.head_dim,
                                                         c.intermediate_size) -
                    c.num_kv_heads;
  a.epoch = ++step_epoch_;
  a.H = c.hidden_size;
  a.Hq = c.num_heads;
  a.Hkv = c.num_kv_heads;
  a.D = c.head_dim;
  a.I = c.intermediate_size;
  a.V = c.vocab_size;
  a.L = c.num_layers;
  a.B = layout_.block_size;
  a.eps = static_cast<float>(c.rms_norm_eps);
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.head_dim)));
  a.want_logits = want_logits ? 1 : 0;
  a.trace = step_trace_host_.empty() ? nullptr : step_trace_.as<uint64_t>();
  if (a.trace) {
    RETURN_IF_CUDA_ERROR(cudaMemsetAsync(a.trace, 0, step_trace_.bytes(), stream_),
                         "clear the step trace");
  }
  if (step_events_[0]) cudaEventRecord(step_events_[0], stream_);
  RETURN_IF_CUDA_ERROR(LaunchDecodeStep(a, num_sms_, stream_), "persistent decode step");
  if (step_events_[0]) {
    cudaEventRecord(step_events_[1], stream_);
    cudaEventSynchronize(step_events_[1]);
    float ms = 0;
    cudaEventElapsedTime(&ms, step_events_[0], step_events_[1]);
    step_event_ms_.push_back(ms);
  }
  if (a.trace) AddStepTrace();
  return OkStatus();
}

}  // namespace crescent::model::cuda
