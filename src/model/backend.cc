#include "model/backend.h"

#include "common/config.h"
#include "model/cpu/cpu_backend.h"
#include "model/safetensors.h"

namespace crescent::model {

const char* KvDtypeName(KvDtype dtype) {
  switch (dtype) {
    case KvDtype::kFloat32:
      return "f32";
    case KvDtype::kBFloat16:
      return "bf16";
    case KvDtype::kFloat16:
      return "f16";
  }
  return "?";
}

std::string KvBlockLayout::Tag() const {
  return "kv" + std::to_string(kKvLayoutVersion) + "-" + KvDtypeName(dtype) + "-L" +
         std::to_string(num_layers) + "-H" + std::to_string(num_kv_heads) + "-D" +
         std::to_string(head_dim) + "-B" + std::to_string(block_size);
}

StatusOr<std::unique_ptr<Backend>> LoadModel(std::string_view model_dir,
                                             const BackendOptions& options) {
  const std::string config_path = std::string(model_dir) + "/config.json";
  auto text = ReadFile(config_path);
  if (!text.ok()) {
    return Status(text.status().code(), text.status().message() +
                                            " (a model directory holds config.json and "
                                            "model.safetensors, as on the Hugging Face Hub)");
  }
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(*text, config_path));
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(model_dir));
  if (options.kv_block_size <= 0 || options.kv_block_size > 4096) {
    return InvalidArgumentError("kv_block_size must be in [1, 4096], got " +
                                std::to_string(options.kv_block_size));
  }
  if (options.backend == "cpu") {
    return cpu::CreateCpuBackend(std::move(checkpoint), config, *text, options);
  }
  return UnimplementedError("backend \"" + options.backend +
                            "\" is not available in this build (available: cpu)");
}

}  // namespace crescent::model
