// `crescent generate`: greedy generation from token ids with the model
// runtime, for checking a checkpoint and timing the forward pass.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "apps/command.h"
#include "model/backend.h"

namespace crescent::apps {
namespace {

struct GenerateOptions {
  std::string model;
  std::string prompt_ids;
  int max_tokens = 16;
  std::string dump_logits;
  int threads = 0;
  int kv_block_size = model::kDefaultKvBlockSize;
  bool ignore_eos = false;
};

StatusOr<std::vector<int32_t>> ParseIds(const std::string& text) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    std::string item = text.substr(i, j - i);
    try {
      size_t used = 0;
      long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument(item);
      ids.push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      return InvalidArgumentError("--prompt-ids: \"" + item +
                                  "\" is not a token id (expected e.g. 1,2,3)");
    }
    i = j + 1;
  }
  if (ids.empty()) return InvalidArgumentError("--prompt-ids is empty (expected e.g. 1,2,3)");
  return ids;
}

Status RunGenerate(const GenerateOptions& o) {
  ASSIGN_OR_RETURN(std::vector<int32_t> prompt, ParseIds(o.prompt_ids));
  if (o.max_tokens < 1) return InvalidArgumentError("--max-tokens must be >= 1");
  model::BackendOptions bo;
  bo.num_threads = o.threads;
  bo.kv_block_size = o.kv_block_size;
  const int64_t positions = static_cast<int64_t>(prompt.size()) + o.max_tokens;
  bo.num_kv_blocks = static_cast<int32_t>((positions + o.kv_block_size - 1) / o.kv_block_size);
  ASSIGN_OR_RETURN(std::unique_ptr<model::Backend> backend, model::LoadModel(o.model, bo));
  const model::ModelConfig& config = backend->config();

  std::vector<int32_t> table(bo.num_kv_blocks);
  for (int32_t i = 0; i < bo.num_kv_blocks; ++i) table[i] = i;
  std::vector<int32_t> seq = prompt, generated;
  std::vector<std::vector<float>> step_logits;
  model::ForwardOutput out;
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  RETURN_IF_ERROR(backend->Forward({{{seq, 0, table, model::LogitsMode::kLast}}}, &out));
  auto t1 = Clock::now();
  for (int step = 0; step < o.max_tokens; ++step) {
    auto row = out.LastRow(0);
    if (!o.dump_logits.empty()) step_logits.emplace_back(row.begin(), row.end());
    const int32_t next =
        static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
    generated.push_back(next);
    seq.push_back(next);
    const bool eos = std::find(config.eos_token_ids.begin(), config.eos_token_ids.end(), next) !=
                     config.eos_token_ids.end();
    if ((eos && !o.ignore_eos) || step + 1 == o.max_tokens) break;
    RETURN_IF_ERROR(
        backend->Forward({{{std::span(seq).last(1), static_cast<int32_t>(seq.size() - 1), table,
                            model::LogitsMode::kLast}}},
                         &out));
  }
  auto t2 = Clock::now();
  for (size_t i = 0; i < generated.size(); ++i) std::printf("%s%d", i ? "," : "", generated[i]);
  std::printf("\n");
  const double prefill_s = std::chrono::duration<double>(t1 - t0).count();
  const double decode_s = std::chrono::duration<double>(t2 - t1).count();
  std::fprintf(stderr,
               "generate: %s %s, prompt %zu tokens in %.3f s (%.1f tok/s), %zu "
               "new tokens, "
               "decode %.1f tok/s\n",
               std::string(model::ArchitectureName(config.arch)).c_str(),
               std::string(backend->name()).c_str(), prompt.size(), prefill_s,
               prompt.size() / prefill_s, generated.size(),
               generated.size() > 1 ? (generated.size() - 1) / decode_s : 0.0);
  if (!o.dump_logits.empty()) {
    std::ofstream f(o.dump_logits);
    if (!f) return ErrnoToStatus(errno, "--dump-logits: create " + o.dump_logits);
    // {"prompt": [...], "tokens": [...], "logits": [[vocab floats] per
    // generated token]}
    auto ints = [&](const std::vector<int32_t>& v) {
      std::string s = "[";
      for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
      return s + "]";
    };
    f << "{\"prompt\": " << ints(prompt) << ", \"tokens\": " << ints(generated)
      << ", \"logits\": [";
    char buf[32];
    for (size_t s = 0; s < step_logits.size(); ++s) {
      f << (s ? ",\n[" : "\n[");
      for (size_t i = 0; i < step_logits[s].size(); ++i) {
        std::snprintf(buf, sizeof(buf), "%s%.9g", i ? "," : "", step_logits[s][i]);
        f << buf;
      }
      f << "]";
    }
    f << "]}\n";
    if (!f) return ErrnoToStatus(errno, "--dump-logits: write " + o.dump_logits);
  }
  return OkStatus();
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("generate", "Greedy generation from token ids (model runtime)");
  auto o = std::make_shared<GenerateOptions>();
  cmd->add_option("--model", o->model, "Hugging Face model directory")->required();
  cmd->add_option("--prompt-ids", o->prompt_ids, "Prompt token ids, e.g. 1,2,3")->required();
  cmd->add_option("--max-tokens", o->max_tokens, "Tokens to generate")->capture_default_str();
  cmd->add_option("--dump-logits", o->dump_logits,
                  "Write the logits of every generated token as JSON to FILE");
  cmd->add_option("--threads", o->threads, "Compute threads (0 = all CPUs)")->capture_default_str();
  cmd->add_option("--kv-block-size", o->kv_block_size, "Tokens per KV block")
      ->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past an end-of-sequence token");
  cmd->callback([o] { ExitWith(RunGenerate(*o)); });
}

CRESCENT_REGISTER_COMMAND(generate, Setup);

}  // namespace
}  // namespace crescent::apps
