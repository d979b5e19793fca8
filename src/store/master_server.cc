#include "store/master_server.h"

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "common/logging.h"
#include "store/master_fast_server.h"
#include "store/master_http.h"
#include "store/master_service.h"

namespace crescent::store {
namespace {

std::string RandomId() {
  std::random_device rd;
  std::mt19937_64 rng((uint64_t{rd()} << 32) ^ rd());
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

class MasterServerImpl final : public MasterServer {
 public:
  explicit MasterServerImpl(const MasterServerOptions& options)
      : options_(options), master_id_(RandomId()), core_(MasterCore::Create(options.master)) {}

  ~MasterServerImpl() override { Shutdown(); }

  Status Init() {
    if (options_.fast_port.has_value() && *options_.fast_port >= 0) {
      ASSIGN_OR_RETURN(fast_, FastServer::Start(options_.host,
                                                static_cast<uint16_t>(*options_.fast_port),
                                                FastUnixName(), core_.get(), &counters_));
    } else if (!options_.fast_port.has_value()) {
      // Clients find the port through Health, so when port + 1 is taken
      // any free port will do.
      auto fast = FastServer::Start(options_.host,
                                    options_.port == 0 || options_.port == 65535
                                        ? 0
                                        : static_cast<uint16_t>(options_.port + 1),
                                    FastUnixName(), core_.get(), &counters_);
      if (!fast.ok()) {
        fast = FastServer::Start(options_.host, 0, FastUnixName(), core_.get(), &counters_);
      }
      if (!fast.ok()) return fast.status();
      fast_ = std::move(*fast);
    }
    service_ = NewMasterService(core_.get(), &counters_, master_id_, options_.cluster_id,
                                options_.master.client_ttl_ms, fast_port(),
                                fast_ ? FastUnixName() : std::string());
    grpc::ServerBuilder builder;
    int bound = 0;
    const std::string address = options_.host + ":" + std::to_string(options_.port);
    builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &bound);
    builder.RegisterService(service_.get());
    builder.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
    builder.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
    server_ = builder.BuildAndStart();
    if (!server_ || bound == 0) {
      return UnavailableError("master: cannot listen on " + address +
                              " (port in use?); pick another --port");
    }
    port_ = static_cast<uint16_t>(bound);
    tick_thread_ = std::thread([this] { TickLoop(); });
    if (options_.enable_metrics || options_.enable_http_metadata_server) {
      auto http = MasterHttp::Start(options_, core_.get(), [this] { return RenderMetrics(); });
      if (!http.ok()) {
        Shutdown();
        return http.status();
      }
      http_ = std::move(*http);
    }
    spdlog::info("master {} serving gRPC on {}:{} and the fast port on {} (cluster {}), metrics "
                 "on port {}",
                 master_id_, options_.host, port_, fast_port(), options_.cluster_id,
                 metrics_port());
    return OkStatus();
  }

  uint16_t port() const override { return port_; }
  uint16_t metrics_port() const override { return http_ ? http_->metrics_port() : 0; }
  uint16_t fast_port() const override { return fast_ ? fast_->port() : 0; }
  // Unique per master process (its random id), so a client on another host
  // can never reach some other master by this name.
  std::string FastUnixName() const { return "crescent-master-" + master_id_; }
  std::string metadata_url() const override {
    if (!http_ || http_->metadata_port() == 0) return "";
    const std::string host = options_.host == "0.0.0.0" ? "127.0.0.1" : options_.host;
    return "http://" + host + ":" + std::to_string(http_->metadata_port()) + "/metadata";
  }
  const std::string& master_id() const override { return master_id_; }
  MasterCore& core() override { return *core_; }

  std::string RenderMetrics() override {
    MasterStats s = core_->Stats();
    std::string out;
    auto gauge = [&](const char* name, const char* help, uint64_t v, const char* type = "gauge") {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
             name + " " + std::to_string(v) + "\n";
    };
    gauge("crescent_master_keys", "Complete objects in the store.", s.keys);
    gauge("crescent_master_pending_puts", "Puts started and not yet ended.", s.pending_puts);
    gauge("crescent_master_allocated_bytes", "Bytes allocated in mounted segments.",
          s.allocated_bytes);
    gauge("crescent_master_total_bytes", "Bytes of all mounted segments.", s.total_bytes);
    gauge("crescent_master_segments", "Mounted segments.", s.segments);
    gauge("crescent_master_active_clients", "Clients that pinged within client_ttl.", s.clients);
    gauge("crescent_master_evicted_objects_total", "Objects evicted.", s.evicted_objects, "counter");
    gauge("crescent_master_evicted_bytes_total", "Bytes evicted.", s.evicted_bytes, "counter");
    gauge("crescent_master_reclaimed_puts_total", "Unfinished puts reclaimed after put_timeout.",
          s.reclaimed_puts, "counter");
    gauge("crescent_master_expired_clients_total", "Clients expired after client_ttl.",
          s.expired_clients, "counter");
    gauge("crescent_master_stalls_total", "Times the master found itself stalled.", s.stalls,
          "counter");
    gauge("crescent_master_reservations", "Live reservations (one-round-trip puts).",
          s.reservations);
    gauge("crescent_master_reserved_bytes", "Bytes reserved by clients and not yet committed.",
          s.reserved_bytes);
    const char* families[][2] = {
        {"crescent_master_rpc_requests_total", "RPCs served, by method."},
        {"crescent_master_rpc_failures_total", "RPCs with a non-OK outcome, by method."},
        {"crescent_master_rpc_items_total", "Metadata operations carried, by method."}};
    for (int f = 0; f < 3; ++f) {
      out += std::string("# HELP ") + families[f][0] + " " + families[f][1] + "\n# TYPE " +
             families[f][0] + " counter\n";
      auto& arr = f == 0 ? counters_.requests : f == 1 ? counters_.failures : counters_.items;
      for (int i = 0; i < static_cast<int>(MasterRpc::kCount); ++i) {
        out += std::string(families[f][0]) + "{method=\"" +
               MasterRpcName(static_cast<MasterRpc>(i)) + "\"} " +
               std::to_string(arr[i].load(std::memory_order_relaxed)) + "\n";
      }
    }
    return out;
  }

  void Shutdown() override {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    fast_.reset();
    if (tick_thread_.joinable()) tick_thread_.join();
    http_.reset();
    std::lock_guard lock(mu_);
    stopped_ = true;
    cv_.notify_all();
  }

  void Wait() override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return stopped_; });
  }

 private:
  void TickLoop() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, std::chrono::milliseconds(options_.tick_interval_ms));
      if (stopping_) break;
      lock.unlock();
      core_->Tick();
      lock.lock();
    }
  }

  const MasterServerOptions options_;
  const std::string master_id_;
  std::unique_ptr<MasterCore> core_;
  RpcCounters counters_;
  std::unique_ptr<rpc::Master::CallbackService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<FastServer> fast_;
  std::unique_ptr<MasterHttp> http_;
  uint16_t port_ = 0;
  std::thread tick_thread_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  bool stopped_ = false;   // guarded by mu_
};

}  // namespace

StatusOr<std::unique_ptr<MasterServer>> MasterServer::Start(const MasterServerOptions& options) {
  RETURN_IF_ERROR(ValidateMasterOptions(options));
  auto server = std::make_unique<MasterServerImpl>(options);
  RETURN_IF_ERROR(server->Init());
  return std::unique_ptr<MasterServer>(std::move(server));
}

}  // namespace crescent::store
