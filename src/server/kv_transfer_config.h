// --kv-transfer-config: vLLM's JSON that turns an instance into a prefill
// (kv_producer) or decode (kv_consumer) member of a disaggregated setup,
//   {"kv_connector": "MooncakeStoreConnector", "kv_role": "kv_producer"}
// and the one place where the named connector is created.
//
// Thread safety: plain values and a free function.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "engine/kv_connector.h"

namespace crescent::model {
class Backend;
}  // namespace crescent::model
namespace crescent::metrics {
class Registry;
}  // namespace crescent::metrics

namespace crescent::server {

enum class KvRole { kProducer, kConsumer, kBoth };
std::string_view KvRoleName(KvRole role);  // "kv_producer", ...

struct KvTransferConfig {
  std::string kv_connector;  // "MooncakeStoreConnector" (the only one known)
  KvRole kv_role = KvRole::kBoth;
  // Optional vLLM fields, kept for the connector: kv_connector_extra_config
  // (an object, {} when absent).
  nlohmann::json kv_connector_extra_config = nlohmann::json::object();
};

// Parses and validates the flag's JSON. Errors (INVALID_ARGUMENT) name the
// field, the value given and the accepted ones, e.g.
// "--kv-transfer-config: kv_role \"producer\" is not one of kv_producer,
// kv_consumer, kv_both".
StatusOr<KvTransferConfig> ParseKvTransferConfig(std::string_view json_text);

// Everything a connector may need from the instance. Borrowed: each must
// outlive the connector.
struct KvConnectorContext {
  model::Backend* backend = nullptr;  // reads/writes the KV blocks
  std::string mooncake_config_path;   // $MOONCAKE_CONFIG_PATH ("" if unset)
  metrics::Registry* registry = nullptr;  // where the connector's metrics go
};

// THE call site where the connector named in `config` is created (see
// kv_connector_factory.cc). Built with the crescent_kvconnector library
// (compile definition CRESCENT_HAVE_KVCONNECTOR) it makes the Mooncake store
// connector; without it, FAILED_PRECONDITION "the MooncakeStoreConnector is
// not built into this crescent binary": a configured connector is never
// silently ignored.
StatusOr<std::unique_ptr<engine::KvConnector>> CreateKvConnector(
    const KvTransferConfig& config, const KvConnectorContext& context);

}  // namespace crescent::server
