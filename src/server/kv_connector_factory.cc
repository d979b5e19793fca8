// The one place where `crescent serve` creates its KV connector. The
// connector library (src/kvconnector, target crescent_kvconnector) is linked
// and CRESCENT_HAVE_KVCONNECTOR defined by src/server/CMakeLists.txt when it
// exists.
#include <fmt/format.h>

#include "server/kv_transfer_config.h"

#ifdef CRESCENT_HAVE_KVCONNECTOR
#include "common/config.h"
#include "kvconnector/store_connector.h"
#endif

namespace crescent::server {

StatusOr<std::unique_ptr<engine::KvConnector>> CreateKvConnector(
    const KvTransferConfig& config, const KvConnectorContext& context) {
#ifdef CRESCENT_HAVE_KVCONNECTOR
  kvconnector::StoreConnectorOptions options;
  switch (config.kv_role) {
    case KvRole::kProducer: options.role = kvconnector::Role::kProducer; break;
    case KvRole::kConsumer: options.role = kvconnector::Role::kConsumer; break;
    case KvRole::kBoth: options.role = kvconnector::Role::kBoth; break;
  }
  if (context.mooncake_config_path.empty()) {
    return InvalidArgumentError(fmt::format(
        "--kv-transfer-config: the {} needs the store's settings: set MOONCAKE_CONFIG_PATH to a "
        "mooncake.json, e.g. {{\"local_hostname\": \"127.0.0.1\", \"metadata_server\": "
        "\"http://127.0.0.1:8080/metadata\", \"protocol\": \"tcp\", "
        "\"master_server_address\": \"127.0.0.1:50001\"}}",
        config.kv_connector));
  }
  ASSIGN_OR_RETURN(options.store, LoadMooncakeConfig(context.mooncake_config_path));
  Status extra = kvconnector::ApplyExtraConfig(config.kv_connector_extra_config, &options);
  if (!extra.ok())
    return InvalidArgumentError("--kv-transfer-config: " + std::string(extra.message()));
  options.registry = context.registry;
  auto connector = kvconnector::StoreConnector::Create(options, context.backend);
  if (!connector.ok()) {
    return Status(connector.status().code(),
                  fmt::format("{} ({}, store settings from {}): {}", config.kv_connector,
                              KvRoleName(config.kv_role), context.mooncake_config_path,
                              connector.status().message()));
  }
  return std::unique_ptr<engine::KvConnector>(std::move(connector).value());
#else
  (void)context;
  return FailedPreconditionError(fmt::format(
      "--kv-transfer-config asks for the {} (kv_role {}), but the {} is not built into this "
      "crescent binary (no src/kvconnector / crescent_kvconnector target); rebuild with it or "
      "drop --kv-transfer-config to serve as a plain instance",
      config.kv_connector, KvRoleName(config.kv_role), config.kv_connector));
#endif
}

}  // namespace crescent::server
