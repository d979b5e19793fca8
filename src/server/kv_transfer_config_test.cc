#include "server/kv_transfer_config.h"

#include <gtest/gtest.h>

namespace crescent::server {
namespace {

TEST(KvTransferConfigTest, ParsesTheWalkthroughRoles) {
  for (auto [text, role] : {std::pair{"kv_producer", KvRole::kProducer},
                            std::pair{"kv_consumer", KvRole::kConsumer}, std::pair{"kv_both", KvRole::kBoth}}) {
    auto c = ParseKvTransferConfig(
        std::string(R"({"kv_connector":"MooncakeStoreConnector","kv_role":")") + text + "\"}");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_EQ(c->kv_connector, "MooncakeStoreConnector");
    EXPECT_EQ(c->kv_role, role);
    EXPECT_EQ(KvRoleName(c->kv_role), text);
  }
  auto extra = ParseKvTransferConfig(
      R"({"kv_connector":"MooncakeStoreConnector","kv_role":"kv_both","kv_connector_extra_config":{"a":1}})");
  ASSERT_TRUE(extra.ok());
  EXPECT_EQ(extra->kv_connector_extra_config["a"], 1);
}

TEST(KvTransferConfigTest, ErrorsNameTheField) {
  struct Bad {
    const char* json;
    const char* needle;
  };
  for (const Bad& b : {Bad{"{", "not valid JSON"}, Bad{"[1]", "JSON object"},
                       Bad{R"({"kv_role":"kv_both"})", "kv_connector is missing"},
                       Bad{R"({"kv_connector":7,"kv_role":"kv_both"})", "kv_connector must be a string"},
                       Bad{R"({"kv_connector":"PyNcclConnector","kv_role":"kv_both"})", "PyNcclConnector"},
                       Bad{R"({"kv_connector":"MooncakeStoreConnector"})", "kv_role is missing"},
                       Bad{R"({"kv_connector":"MooncakeStoreConnector","kv_role":"producer"})",
                           "kv_role \"producer\" is not one of"},
                       Bad{R"({"kv_connector":"MooncakeStoreConnector","kv_role":"kv_both","kv_connector_extra_config":3})",
                           "kv_connector_extra_config"}}) {
    auto c = ParseKvTransferConfig(b.json);
    ASSERT_FALSE(c.ok()) << b.json;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(b.needle), std::string::npos) << c.status().message();
    EXPECT_NE(c.status().message().find("--kv-transfer-config"), std::string::npos);
  }
}

TEST(KvTransferConfigTest, ConnectorCreationNeverSilentlySucceedsWithoutStoreSettings) {
  auto c = ParseKvTransferConfig(R"({"kv_connector":"MooncakeStoreConnector","kv_role":"kv_consumer"})");
  ASSERT_TRUE(c.ok());
  // No mooncake.json (and, in a build without src/kvconnector, no
  // connector at all): an error that says which.
  auto connector = CreateKvConnector(*c, {});
  ASSERT_FALSE(connector.ok());
  const std::string m(connector.status().message());
  EXPECT_TRUE(m.find("MOONCAKE_CONFIG_PATH") != std::string::npos ||
              m.find("not built") != std::string::npos)
      << m;
}

}  // namespace
}  // namespace crescent::server
