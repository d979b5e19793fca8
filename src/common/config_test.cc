#include "common/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "common/testutil.h"

namespace crescent {
namespace {

TEST(ConfigTest, ParsesSeedWalkthroughConfig) {
  auto cfg = ParseMooncakeConfig(R"({"local_hostname": "192.168.0.137",
      "metadata_server": "etcd://192.168.0.137:2379", "protocol": "tcp", "device_name": "",
      "master_server_address": "192.168.0.137:50001"})");
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_EQ(cfg->metadata.kind, MetadataServerSpec::Kind::kEtcd);
  ASSERT_EQ(cfg->metadata.endpoints.size(), 1u);
  EXPECT_EQ(cfg->metadata.endpoints[0].second, 2379);
  EXPECT_EQ(cfg->global_segment_size, 3355443200ull);
}

TEST(ConfigTest, MetadataServerForms) {
  auto bare = ParseMetadataServer("192.168.0.137:2379");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->kind, MetadataServerSpec::Kind::kEtcd);
  auto multi = ParseMetadataServer("etcd://h1:2379,h2:2380");
  ASSERT_TRUE(multi.ok());
  EXPECT_EQ(multi->endpoints.size(), 2u);
  EXPECT_EQ(multi->endpoints[1].first, "h2");
  auto redis = ParseMetadataServer("redis://h:6379");
  ASSERT_TRUE(redis.ok());
  EXPECT_EQ(redis->kind, MetadataServerSpec::Kind::kRedis);
  auto http = ParseMetadataServer("http://h:8080/metadata");
  ASSERT_TRUE(http.ok());
  EXPECT_EQ(http->kind, MetadataServerSpec::Kind::kHttp);
  EXPECT_EQ(http->http_path, "/metadata");
  EXPECT_FALSE(ParseMetadataServer("zk://h:1").ok());
  EXPECT_FALSE(ParseMetadataServer("etcd://h:notaport").ok());
}

TEST(ConfigTest, SizesAsStringsOrNumbers) {
  auto cfg = ParseMooncakeConfig(R"({"metadata_server": "http://127.0.0.1:8080/metadata",
      "global_segment_size": "3.125GB", "local_buffer_size": 536870912})");
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_EQ(cfg->global_segment_size, 3355443200ull);
  EXPECT_EQ(cfg->local_buffer_size, 536870912ull);
}

TEST(ConfigTest, ErrorsNameTheFieldAndTheFix) {
  auto rdma = ParseMooncakeConfig(
      R"({"metadata_server": "127.0.0.1:2379", "protocol": "rdma", "device_name": "mlx5_0"})");
  ASSERT_FALSE(rdma.ok());
  EXPECT_NE(rdma.status().message().find("\"tcp\""), std::string::npos) << rdma.status().message();
  auto proto = ParseMooncakeConfig(R"({"metadata_server": "127.0.0.1:2379", "protocol": "udp"})");
  ASSERT_FALSE(proto.ok());
  EXPECT_NE(proto.status().message().find("protocol"), std::string::npos);
  auto missing = ParseMooncakeConfig(R"({"protocol": "tcp"})");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("metadata_server"), std::string::npos);
  auto size = ParseMooncakeConfig(R"({"metadata_server": "h:1", "global_segment_size": "lots"})");
  ASSERT_FALSE(size.ok());
  EXPECT_NE(size.status().message().find("global_segment_size"), std::string::npos);
  auto master = ParseMooncakeConfig(R"({"metadata_server": "h:1", "master_server_address": "h"})");
  ASSERT_FALSE(master.ok());
  EXPECT_NE(master.status().message().find("master_server_address"), std::string::npos);
  auto json = ParseMooncakeConfig("{not json");
  ASSERT_FALSE(json.ok());
  EXPECT_NE(json.status().message().find("JSON"), std::string::npos);
}

TEST(ConfigTest, LoadsFromEnvironment) {
  testing::TempDir dir;
  std::string path = dir.path() + "/mooncake.json";
  std::ofstream(path) << R"({"metadata_server": "redis://127.0.0.1:6379"})";
  setenv("MOONCAKE_CONFIG_PATH", path.c_str(), 1);
  auto cfg = LoadMooncakeConfig();
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_EQ(cfg->metadata.kind, MetadataServerSpec::Kind::kRedis);
  setenv("MOONCAKE_CONFIG_PATH", (dir.path() + "/nope.json").c_str(), 1);
  auto missing = LoadMooncakeConfig();
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("MOONCAKE_CONFIG_PATH"), std::string::npos);
  unsetenv("MOONCAKE_CONFIG_PATH");
  EXPECT_EQ(LoadMooncakeConfig().status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace crescent
