#include "engine/backend_runner.h"

#include <fmt/format.h>

#include "model/backend.h"
#include "model/tokenizer/detokenizer.h"

namespace crescent::engine {
namespace {

class BackendRunner : public ModelRunner {
 public:
  BackendRunner(model::Backend* backend, std::unique_ptr<model::Backend> owned)
      : owned_(std::move(owned)), backend_(backend),
        fingerprint_(fmt::format("{}|{}", backend->model_fingerprint(),
                                 backend->kv_layout().Tag())) {}

  int vocab_size() const override { return backend_->config().vocab_size; }
  int block_size() const override { return backend_->kv_layout().block_size; }
  int num_blocks() const override { return backend_->num_kv_blocks(); }
  std::string fingerprint() const override { return fingerprint_; }

  Status Forward(std::span<const ForwardSeq> batch, std::vector<float>* logits) override {
    return ForwardSampled(batch, logits, nullptr);
  }

  bool SupportsDeviceSampling() const override { return backend_->SupportsDeviceSampling(); }

  Status ForwardSampled(std::span<const ForwardSeq> batch, std::vector<float>* logits,
                        std::vector<DeviceSampled>* sampled) override {
    batch_.sequences.resize(batch.size());
    requests_.resize(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      model::SequenceInput& in = batch_.sequences[i];
      in.tokens = batch[i].tokens;
      in.position = batch[i].start_position;
      in.block_table = batch[i].block_table;
      in.logits = batch[i].need_logits ? model::LogitsMode::kLast : model::LogitsMode::kNone;
      in.sample = nullptr;
      if (const DeviceSample* d = batch[i].sample; d && batch[i].need_logits) {
        if (!sampled) return InvalidArgumentError("device sampling asked of Forward");
        requests_[i] = {d->temperature, d->top_k, d->top_p, d->min_p, d->uniform, d->logprob};
        in.sample = &requests_[i];
      }
    }
    RETURN_IF_ERROR(backend_->Forward(batch_, &out_));
    logits->clear();
    if (sampled) sampled->assign(batch.size(), DeviceSampled{});
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!batch[i].need_logits) continue;
      if (batch_.sequences[i].sample) {
        const model::SampledToken& t = out_.sampled[i];
        (*sampled)[i] = {t.token, t.logprob, t.rank};
        continue;
      }
      auto row = out_.LastRow(static_cast<int32_t>(i));
      logits->insert(logits->end(), row.begin(), row.end());
    }
    return OkStatus();
  }

 private:
  const std::unique_ptr<model::Backend> owned_;  // null when borrowed
  model::Backend* const backend_;
  const std::string fingerprint_;
  model::ForwardBatch batch_;   // reused between calls
  model::ForwardOutput out_;    // reused between calls
  std::vector<model::SamplingRequest> requests_;  // [batch], pointed to by batch_
};

class DetokenizerStream : public TextStream {
 public:
  DetokenizerStream(const Tokenizer& tokenizer, bool skip_special)
      : detok_(tokenizer, skip_special) {}
  std::string Append(int32_t token) override { return detok_.Add(token); }
  std::string Finish() override { return detok_.Finish(); }

 private:
  Detokenizer detok_;
};

}  // namespace

std::unique_ptr<ModelRunner> MakeBackendRunner(std::unique_ptr<model::Backend> backend) {
  model::Backend* raw = backend.get();
  return std::make_unique<BackendRunner>(raw, std::move(backend));
}

std::unique_ptr<ModelRunner> MakeBorrowedBackendRunner(model::Backend* backend) {
  return std::make_unique<BackendRunner>(backend, nullptr);
}

TextStreamFactory MakeDetokenizerFactory(const Tokenizer* tokenizer) {
  return [tokenizer](std::span<const int32_t>, bool skip_special_tokens) {
    return std::make_unique<DetokenizerStream>(*tokenizer, skip_special_tokens);
  };
}

}  // namespace crescent::engine
