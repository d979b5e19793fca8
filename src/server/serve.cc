#include "server/serve.h"

#include <fmt/format.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/http.h"
#include "common/logging.h"
#include "common/metrics.h"
#include "common/size.h"
#include "engine/backend_runner.h"
#include "engine/engine.h"
#include "model/backend.h"
#include "model/tokenizer/chat_template.h"
#include "model/tokenizer/tokenizer.h"
#include "server/kv_transfer_config.h"
#include "server/openai_server.h"

namespace crescent::server {
namespace {

// Bytes the host can still give (MemAvailable of /proc/meminfo).
StatusOr<uint64_t> AvailableHostMemory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return InternalError("cannot read MemAvailable from /proc/meminfo; pass --kv-cache-memory-bytes");
}

uint64_t WeightFileBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.path().extension() == ".safetensors") total += e.file_size(ec);
  return total;
}

// KV pool bytes on the CPU: --kv-cache-memory-bytes, else the
// --gpu-memory-utilization share of available memory less the weights;
// never more than max_num_seqs full-length sequences can use (a bigger
// pool only costs address space and block-table bookkeeping).
StatusOr<uint64_t> CpuKvCacheBytes(const ServeOptions& o, const model::ModelConfig& config,
                                   int max_model_len) {
  const uint64_t block_bytes = static_cast<uint64_t>(config.num_layers) * 2 * config.num_kv_heads *
                               config.head_dim * o.block_size * sizeof(float);
  const uint64_t blocks_per_seq = (max_model_len + o.block_size - 1) / o.block_size;
  const uint64_t cap = block_bytes * blocks_per_seq * std::max(1, o.max_num_seqs);
  if (!o.kv_cache_memory.empty()) {
    ASSIGN_OR_RETURN(uint64_t bytes, ParseSize(o.kv_cache_memory));
    return bytes;
  }
  ASSIGN_OR_RETURN(uint64_t avail, AvailableHostMemory());
  const double share = o.gpu_memory_utilization * static_cast<double>(avail) -
                       static_cast<double>(WeightFileBytes(o.model));
  if (share < static_cast<double>(block_bytes * blocks_per_seq))
    return ResourceExhaustedError(fmt::format(
        "--gpu-memory-utilization {} of {:.1f} GiB available host memory (less {:.1f} GiB of "
        "weights) leaves no room for one {}-token sequence's KV cache; raise it, lower "
        "--max-model-len or pass --kv-cache-memory-bytes",
        o.gpu_memory_utilization, avail / 1073741824.0, WeightFileBytes(o.model) / 1073741824.0,
        max_model_len));
  return std::min<uint64_t>(static_cast<uint64_t>(share), cap);
}

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

}  // namespace

Status ValidateServeOptions(const ServeOptions& o) {
  if (o.tensor_parallel_size != 1)
    return InvalidArgumentError(fmt::format(
        "-tp/--tensor-parallel-size {}: crescent serve runs one model replica on one device; "
        "only 1 is supported (run several instances behind crescent proxy instead)",
        o.tensor_parallel_size));
  if (o.device != "cpu" && o.device != "cuda")
    return InvalidArgumentError(fmt::format("--device {}: expected cpu or cuda", o.device));
  if (o.port < 0 || o.port > 65535) return InvalidArgumentError(fmt::format("--port {} is not a port", o.port));
  if (o.block_size < 1 || o.block_size > 1024)
    return InvalidArgumentError(fmt::format("--block-size {}: expected 1..1024 (vLLM: 16)", o.block_size));
  if (o.max_model_len < 0) return InvalidArgumentError("--max-model-len must be positive");
  if (!(o.gpu_memory_utilization > 0 && o.gpu_memory_utilization <= 1))
    return InvalidArgumentError(fmt::format("--gpu-memory-utilization {}: expected a fraction in (0, 1]",
                                            o.gpu_memory_utilization));
  if (o.max_num_seqs < 1) return InvalidArgumentError("--max-num-seqs must be at least 1");
  if (o.max_num_batched_tokens < 1) return InvalidArgumentError("--max-num-batched-tokens must be at least 1");
  if (!o.kv_cache_memory.empty()) RETURN_IF_ERROR(ParseSize(o.kv_cache_memory).status());
  if (!o.kv_transfer_config.empty()) RETURN_IF_ERROR(ParseKvTransferConfig(o.kv_transfer_config).status());
  return OkStatus();
}

Status RunServe(const ServeOptions& o) {
  RETURN_IF_ERROR(ValidateServeOptions(o));
  ASSIGN_OR_RETURN(model::ModelConfig config, model::LoadModelConfig(o.model));
  const int max_model_len =
      o.max_model_len > 0 ? o.max_model_len : static_cast<int>(config.max_position_embeddings);

  model::BackendOptions bo;
  bo.backend = o.device;
  bo.num_threads = o.threads;
  bo.kv_block_size = o.block_size;
  bo.max_num_batched_tokens = o.max_num_batched_tokens;
  if (o.device == "cpu") {
    ASSIGN_OR_RETURN(bo.kv_cache_bytes, CpuKvCacheBytes(o, config, max_model_len));
  } else if (!o.kv_cache_memory.empty()) {
    ASSIGN_OR_RETURN(bo.kv_cache_bytes, ParseSize(o.kv_cache_memory));
  } else {
    // CUDA: the pool takes this share of device memory less what weights
    // and activations use (sized by the backend after loading them).
    bo.gpu_memory_utilization = o.gpu_memory_utilization;
  }
  auto loaded = model::LoadModel(o.model, bo);
  if (!loaded.ok() && o.device == "cuda" && loaded.status().code() == StatusCode::kUnimplemented)
    return FailedPreconditionError(
        "--device cuda: this crescent binary has no CUDA model backend (the model runtime "
        "reports: " +
        loaded.status().message() + "); use --device cpu");
  if (!loaded.ok() && o.device == "cuda" && loaded.status().code() == StatusCode::kUnavailable)
    return FailedPreconditionError("--device cuda: no usable GPU (" + loaded.status().message() +
                                   ")");
  RETURN_IF_ERROR(loaded.status());
  std::unique_ptr<model::Backend> backend = std::move(loaded).value();

  // Tokenizer and chat template are optional: without them the server
  // takes token-id prompts only.
  const std::string tok_dir = o.tokenizer.empty() ? o.model : o.tokenizer;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<ChatTemplate> chat_template;
  if (std::filesystem::exists(std::filesystem::path(tok_dir) / "tokenizer.json")) {
    ASSIGN_OR_RETURN(tokenizer, Tokenizer::Load(tok_dir));
    auto tmpl = ChatTemplate::FromTokenizer(*tokenizer);
    if (tmpl.ok()) {
      chat_template = std::move(tmpl).value();
    } else if (tmpl.status().code() != StatusCode::kNotFound) {
      return tmpl.status();
    }
  } else if (!o.tokenizer.empty()) {
    return InvalidArgumentError(fmt::format("--tokenizer {}: no tokenizer.json there", o.tokenizer));
  } else {
    spdlog::warn("{} has no tokenizer.json: serving token-id prompts only", tok_dir);
  }

  // The KV connector (disaggregated prefill/decode), when configured.
  std::unique_ptr<engine::KvConnector> connector;
  if (!o.kv_transfer_config.empty()) {
    ASSIGN_OR_RETURN(KvTransferConfig kv_config, ParseKvTransferConfig(o.kv_transfer_config));
    KvConnectorContext context;
    context.backend = backend.get();
    context.registry = &metrics::Registry::Default();
    if (const char* path = std::getenv("MOONCAKE_CONFIG_PATH")) context.mooncake_config_path = path;
    ASSIGN_OR_RETURN(connector, CreateKvConnector(kv_config, context));
  }

  engine::EngineOptions eo;
  eo.max_num_seqs = o.max_num_seqs;
  eo.max_num_batched_tokens = o.max_num_batched_tokens;
  eo.max_model_len = max_model_len;
  eo.enable_prefix_caching = o.enable_prefix_caching;
  eo.eos_token_ids = tokenizer ? tokenizer->EosTokenIds() : config.eos_token_ids;
  if (tokenizer) eo.detokenizer = engine::MakeDetokenizerFactory(tokenizer.get());
  eo.kv_connector = connector.get();
  eo.seed = o.seed;
  const int num_blocks = backend->num_kv_blocks();
  const uint64_t block_bytes = backend->kv_layout().BlockBytes();
  auto runner = connector ? engine::MakeBorrowedBackendRunner(backend.get())
                          : engine::MakeBackendRunner(std::move(backend));
  ASSIGN_OR_RETURN(std::unique_ptr<engine::Engine> engine, engine::Engine::Create(eo, std::move(runner)));

  OpenAiServerOptions so;
  so.served_model_names = o.served_model_names.empty() ? std::vector<std::string>{o.model}
                                                       : o.served_model_names;
  so.model_path = o.model;
  OpenAiServer api(so, engine.get(), tokenizer.get(), chat_template.get());
  http::ServerOptions ho;
  ho.host = o.host;
  ho.port = static_cast<uint16_t>(o.port);
  ho.io_threads = std::max(1, o.api_threads);
  ho.server_name = "crescent-serve";
  // Long generations stream slowly; keep idle keep-alive connections a while.
  ho.idle_timeout = std::chrono::minutes(10);
  http::Server server(ho);
  api.RegisterRoutes(&server);

  signal(SIGINT, OnSignal);
  signal(SIGTERM, OnSignal);
  signal(SIGPIPE, SIG_IGN);
  RETURN_IF_ERROR(server.Start());
  spdlog::info("serving {} ({}, {} KV blocks of {} tokens, {:.1f} MiB) as '{}' on {}:{}, max-model-len {}",
           o.model, o.device, num_blocks, o.block_size, num_blocks * block_bytes / 1048576.0,
           so.served_model_names.front(), o.host, server.port(), max_model_len);
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  spdlog::info("stopping");
  server.Stop();
  engine.reset();  // aborts what still runs
  return OkStatus();
}

}  // namespace crescent::server
