// The HTTP metadata service's wire protocol (Mooncake-compatible routes and
// leases), spoken with a plain HTTP client.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "common/http.h"
#include "transfer/metadata/base64.h"
#include "transfer/metadata/metadata_service.h"

namespace crescent::transfer {
namespace {

using namespace std::chrono_literals;

class MetadataServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    service_ = MetadataService::Create();
    service_->AddRoutes(server_);
    ASSERT_TRUE(server_.Start().ok());
    client_ = std::make_unique<http::Client>("127.0.0.1", server_.port());
  }
  uint64_t Grant(int ttl_ms) {
    auto r = client_->Post("/metadata/lease?ttl_ms=" + std::to_string(ttl_ms), "");
    EXPECT_EQ(r->status, 200);
    return std::stoull(nlohmann::json::parse(r->body).at("id").get<std::string>());
  }

  http::Server server_{http::ServerOptions{}};
  std::shared_ptr<MetadataService> service_;
  std::unique_ptr<http::Client> client_;
};

// What Mooncake's HTTP metadata server does, byte for byte in the bodies
// its clients look at.
TEST_F(MetadataServiceTest, MooncakeCompatibleRoutes) {
  EXPECT_EQ(client_->Get("/metadata?key=mooncake%2Fram%2Fseg")->status, 404);
  auto put = client_->Put("/metadata?key=mooncake%2Fram%2Fseg", R"({"name":"seg"})");
  EXPECT_EQ(put->status, 200);
  EXPECT_EQ(put->body, "metadata updated");
  auto get = client_->Get("/metadata?key=mooncake/ram/seg");
  EXPECT_EQ(get->status, 200);
  EXPECT_EQ(get->body, R"({"name":"seg"})");
  auto del = client_->Delete("/metadata?key=mooncake/ram/seg");
  EXPECT_EQ(del->status, 200);
  EXPECT_EQ(del->body, "metadata deleted");
  EXPECT_EQ(client_->Delete("/metadata?key=mooncake/ram/seg")->status, 404);
  EXPECT_EQ(client_->Get("/metadata")->status, 400);  // no key
}

TEST_F(MetadataServiceTest, ListByPrefixIsSortedAndBinarySafe) {
  std::string binary("\0\xff", 2);
  client_->Put("/metadata?key=p%2Fb", binary).status().IgnoreError();
  client_->Put("/metadata?key=p%2Fa", "1").status().IgnoreError();
  client_->Put("/metadata?key=q", "2").status().IgnoreError();
  auto r = client_->Get("/metadata?prefix=p%2F");
  ASSERT_EQ(r->status, 200);
  auto kvs = nlohmann::json::parse(r->body).at("kvs");
  ASSERT_EQ(kvs.size(), 2u);
  EXPECT_EQ(*Base64Decode(kvs[0]["key"].get<std::string>()), "p/a");
  EXPECT_EQ(*Base64Decode(kvs[1]["key"].get<std::string>()), "p/b");
  EXPECT_EQ(*Base64Decode(kvs[1]["value"].get<std::string>()), binary);
}

TEST_F(MetadataServiceTest, LeaseKeepsEntriesAliveUntilItLapses) {
  uint64_t lease = Grant(300);
  std::string l = "&lease=" + std::to_string(lease);
  ASSERT_EQ(client_->Put("/metadata?key=a" + l, "x")->status, 200);
  ASSERT_EQ(client_->Put("/metadata?key=b" + l, "y")->status, 200);
  for (int i = 0; i < 6; ++i) {  // 600 ms, twice the ttl
    std::this_thread::sleep_for(100ms);
    ASSERT_EQ(client_->Post("/metadata/lease/keepalive?lease=" + std::to_string(lease), "")->status, 200);
  }
  EXPECT_EQ(client_->Get("/metadata?key=a")->status, 200);
  // Another writer takes `b` over (no lease): it outlives the lease.
  ASSERT_EQ(client_->Put("/metadata?key=b", "z")->status, 200);
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(client_->Get("/metadata?key=a")->status, 404);
  EXPECT_EQ(client_->Get("/metadata?key=b")->body, "z");
  EXPECT_EQ(client_->Post("/metadata/lease/keepalive?lease=" + std::to_string(lease), "")->status, 404);
  EXPECT_EQ(client_->Put("/metadata?key=c" + l, "x")->status, 404);  // lease gone
  EXPECT_EQ(service_->lease_count(), 0u);
  EXPECT_EQ(service_->entry_count(), 1u);
}

TEST_F(MetadataServiceTest, RevokeDeletesTheLeasesEntries) {
  uint64_t lease = Grant(60000);
  ASSERT_EQ(client_->Put("/metadata?key=a&lease=" + std::to_string(lease), "x")->status, 200);
  EXPECT_EQ(client_->Delete("/metadata/lease?lease=" + std::to_string(lease))->status, 200);
  EXPECT_EQ(client_->Get("/metadata?key=a")->status, 404);
  EXPECT_EQ(client_->Delete("/metadata/lease?lease=" + std::to_string(lease))->status, 404);
  EXPECT_EQ(client_->Put("/metadata?key=a&lease=abc", "x")->status, 400);
}

}  // namespace
}  // namespace crescent::transfer
