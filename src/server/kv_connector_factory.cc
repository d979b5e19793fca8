// The one place where `crescent serve` creates its KV connector. The
// connector library (src/kvconnector, target crescent_kvconnector) is built
// by another component; src/server/CMakeLists.txt links it and defines
// CRESCENT_HAVE_KVCONNECTOR when that target exists.
#include <fmt/format.h>

#include "server/kv_transfer_config.h"

#ifdef CRESCENT_HAVE_KVCONNECTOR
#include "kvconnector/kv_connector.h"
#endif

namespace crescent::server {

StatusOr<std::unique_ptr<engine::KvConnector>> CreateKvConnector(
    const KvTransferConfig& config, const KvConnectorContext& context) {
#ifdef CRESCENT_HAVE_KVCONNECTOR
  // The kvconnector library's factory (adapt here if its signature differs).
  return kvconnector::CreateMooncakeStoreConnector(config, context);
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
