#include "server/kv_transfer_config.h"

#include <fmt/format.h>

namespace crescent::server {

std::string_view KvRoleName(KvRole role) {
  switch (role) {
    case KvRole::kProducer: return "kv_producer";
    case KvRole::kConsumer: return "kv_consumer";
    case KvRole::kBoth: return "kv_both";
  }
  return "kv_both";
}

namespace {
constexpr const char* kFlag = "--kv-transfer-config";
constexpr const char* kKnownConnectors[] = {"MooncakeStoreConnector"};
}  // namespace

StatusOr<KvTransferConfig> ParseKvTransferConfig(std::string_view json_text) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    return InvalidArgumentError(fmt::format(
        "{}: not valid JSON: {} (expected e.g. "
        "'{{\"kv_connector\":\"MooncakeStoreConnector\",\"kv_role\":\"kv_both\"}}')",
        kFlag, json_text));
  if (!j.is_object())
    return InvalidArgumentError(fmt::format("{}: expected a JSON object, got {}", kFlag, j.dump()));
  KvTransferConfig c;

  auto connector = j.find("kv_connector");
  if (connector == j.end() || connector->is_null())
    return InvalidArgumentError(fmt::format(
        "{}: field kv_connector is missing (use \"MooncakeStoreConnector\")", kFlag));
  if (!connector->is_string())
    return InvalidArgumentError(fmt::format("{}: field kv_connector must be a string, got {}",
                                            kFlag, connector->dump()));
  c.kv_connector = connector->get<std::string>();
  bool known = false;
  for (const char* k : kKnownConnectors) known |= c.kv_connector == k;
  if (!known)
    return InvalidArgumentError(fmt::format(
        "{}: field kv_connector \"{}\" is not a known connector (known: MooncakeStoreConnector)",
        kFlag, c.kv_connector));

  auto role = j.find("kv_role");
  if (role == j.end() || role->is_null())
    return InvalidArgumentError(fmt::format(
        "{}: field kv_role is missing (one of kv_producer, kv_consumer, kv_both)", kFlag));
  if (!role->is_string())
    return InvalidArgumentError(
        fmt::format("{}: field kv_role must be a string, got {}", kFlag, role->dump()));
  const std::string r = role->get<std::string>();
  if (r == "kv_producer") {
    c.kv_role = KvRole::kProducer;
  } else if (r == "kv_consumer") {
    c.kv_role = KvRole::kConsumer;
  } else if (r == "kv_both") {
    c.kv_role = KvRole::kBoth;
  } else {
    return InvalidArgumentError(fmt::format(
        "{}: field kv_role \"{}\" is not one of kv_producer, kv_consumer, kv_both", kFlag, r));
  }

  auto extra = j.find("kv_connector_extra_config");
  if (extra != j.end() && !extra->is_null()) {
    if (!extra->is_object())
      return InvalidArgumentError(fmt::format(
          "{}: field kv_connector_extra_config must be an object, got {}", kFlag, extra->dump()));
    c.kv_connector_extra_config = *extra;
  }
  return c;
}

}  // namespace crescent::server
