// Test fixture for the store connector: real engines over the real CPU
// model runtime (the tiny fixture models), a real master (gRPC + its HTTP
// metadata service on loopback) and real store clients, in one process.
// Shared by store_connector_test.cc and async_load_test.cc.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <random>

#include <nlohmann/json.hpp>

#include "common/testutil.h"
#include "engine/backend_runner.h"
#include "engine/engine.h"
#include "engine/engine_testutil.h"
#include "kvconnector/store_connector.h"
#include "model/backend.h"
#include "store/master_server.h"

namespace crescent::kvconnector::kvtest {

constexpr int kBlockSize = 16;
constexpr int kChunkTokens = 32;  // two blocks

inline std::vector<int32_t> RandomPrompt(int n, uint32_t seed, int vocab = 512) {
  std::mt19937 rng(seed);
  std::vector<int32_t> p(n);
  for (int32_t& t : p) t = static_cast<int32_t>(3 + rng() % (vocab - 3));
  return p;
}

// One serving instance: model, optional connector, engine.
struct Instance {
  std::unique_ptr<model::Backend> backend;
  std::unique_ptr<StoreConnector> connector;
  std::unique_ptr<engine::KvConnector> wrapper;  // around `connector`, if any
  std::unique_ptr<engine::Engine> engine;

  std::vector<int32_t> Generate(const std::string& id, const std::vector<int32_t>& prompt,
                                int max_tokens) {
    engine::EngineRequest r = engine::testing::Greedy(id, prompt, max_tokens);
    r.params.ignore_eos = true;
    engine::OutputQueue q;
    Status s = engine->Submit(std::move(r), q.Callback());
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::vector<int32_t> tokens;
    while (auto out = q.Pop(std::chrono::seconds(60))) {
      EXPECT_TRUE(out->error.ok()) << out->error.ToString();
      tokens.insert(tokens.end(), out->new_tokens.begin(), out->new_tokens.end());
      if (out->request_finished) return tokens;
    }
    ADD_FAILURE() << "request " << id << " did not finish";
    return tokens;
  }
};

class StoreConnectorTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { StartMaster(); }

  void StartMaster() {
    store::MasterServerOptions o;
    o.host = "127.0.0.1";
    o.port = master_port_;
    o.enable_http_metadata_server = true;
    o.http_metadata_server_port = metadata_port_;
    o.metrics_port = 0;
    auto m = store::MasterServer::Start(o);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    master_ = std::move(*m);
    master_port_ = master_->port();
  }

  MooncakeConfig StoreConfig(uint64_t segment, uint64_t local_buffer = 8 << 20) const {
    nlohmann::json j = {{"local_hostname", "127.0.0.1"},
                        {"metadata_server", master_->metadata_url()},
                        {"protocol", "tcp"},
                        {"master_server_address", "127.0.0.1:" + std::to_string(master_port_)},
                        {"global_segment_size", segment},
                        {"local_buffer_size", local_buffer}};
    auto c = ParseMooncakeConfig(j.dump());
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? *c : MooncakeConfig{};
  }

  // An instance of the parameter model; `role` null: no connector.
  // staging_chunks > 0: a staging buffer (local_buffer_size) of only that
  // many chunks.
  Instance Make(const Role* role, uint64_t segment = 32 << 20, int staging_chunks = 0) {
    Instance in;
    model::BackendOptions bo;
    bo.num_threads = 1;
    bo.kv_block_size = kBlockSize;
    bo.num_kv_blocks = 128;
    auto b = model::LoadModel("tests/data/models/" + GetParam(), bo);
    EXPECT_TRUE(b.ok()) << b.status().ToString();
    in.backend = std::move(b).value();
    if (role != nullptr) {
      StoreConnectorOptions co;
      co.role = *role;
      const uint64_t chunk_bytes =
          in.backend->kv_layout().BlockBytes() * (kChunkTokens / kBlockSize);
      co.store = StoreConfig(segment, staging_chunks > 0
                                          ? (staging_chunks * chunk_bytes + 8191) / 4096 * 4096
                                          : 8 << 20);
      co.chunk_tokens = kChunkTokens;
      co.load_timeout = std::chrono::milliseconds(2000);
      co.save_timeout = std::chrono::milliseconds(5000);
      co.read_into_pool = read_into_pool_;
      co.async_load = async_load_;
      auto c = StoreConnector::Create(co, in.backend.get());
      EXPECT_TRUE(c.ok()) << c.status().ToString();
      if (c.ok()) in.connector = std::move(c).value();
    }
    engine::EngineOptions eo;
    eo.max_model_len = 1024;
    if (wrap_ && in.connector) in.wrapper = wrap_(in.connector.get());
    eo.kv_connector = in.wrapper ? in.wrapper.get() : in.connector.get();
    auto e = engine::Engine::Create(eo, engine::MakeBorrowedBackendRunner(in.backend.get()));
    EXPECT_TRUE(e.ok()) << e.status().ToString();
    in.engine = std::move(e).value();
    return in;
  }

  // The producer-consumer scenario on every prompt shape.
  void ProducerThenConsumer();

  bool read_into_pool_ = true;
  bool async_load_ = true;
  // Wraps the next instances' connectors (fault injection); null: none.
  std::function<std::unique_ptr<engine::KvConnector>(StoreConnector*)> wrap_;
  uint16_t master_port_ = 0;
  uint16_t metadata_port_ = crescent::testing::FreePort();
  std::unique_ptr<store::MasterServer> master_;
};

inline const Role kProducer = Role::kProducer;
inline const Role kConsumer = Role::kConsumer;
inline const Role kBoth = Role::kBoth;

}  // namespace crescent::kvconnector::kvtest
