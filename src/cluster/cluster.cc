#include "cluster/cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "cluster/child_process.h"
#include "common/config.h"
#include "common/http.h"
#include "common/logging.h"

namespace crescent::cluster {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Health polls: often enough that start-up is not padded by the poll period.
constexpr auto kPollPeriod = 50ms;

// Binds `count` distinct free ports on host at once (so that they differ),
// then releases them for the children to take.
StatusOr<std::vector<uint16_t>> FreePorts(const std::string& host, int count) {
  std::vector<int> fds;
  std::vector<uint16_t> ports;
  Status status;
  for (int i = 0; i < count && status.ok(); ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
    socklen_t len = sizeof(addr);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      status = ErrnoToStatus(errno, "cannot find a free port on " + host);
    } else {
      ports.push_back(ntohs(addr.sin_port));
    }
    if (fd >= 0) fds.push_back(fd);
  }
  for (int fd : fds) close(fd);
  if (!status.ok()) return status;
  return ports;
}

// The fixed port a user asked for must be free, or nothing starts.
Status CheckPortFree(const std::string& host, uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  int rc = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  int err = errno;
  close(fd);
  if (rc != 0) {
    return FailedPreconditionError(fmt::format(
        "port {} on {} is not available ({}): stop what uses it or pick another with --port",
        port, host, strerror(err)));
  }
  return OkStatus();
}

std::string Addr(const std::string& host, uint16_t port) {
  return host + ":" + std::to_string(port);
}

class ClusterImpl : public Cluster {
 public:
  explicit ClusterImpl(ClusterOptions o) : o_(std::move(o)) {}
  ~ClusterImpl() override { Stop(); }

  Status Run();

  std::string base_url() const override { return "http://" + front_address_; }
  const std::string& served_model_name() const override { return o_.served_model_name; }
  const std::vector<Member>& members() const override { return members_; }
  const std::string& work_dir() const override { return o_.work_dir; }
  const std::string& mooncake_config_path() const override { return mooncake_path_; }

  Status CheckAlive() override {
    for (auto& c : children_) {
      if (!c->Running()) return Died(*c, "stopped:");
    }
    return OkStatus();
  }

  std::vector<Status> NewlyExited() override {
    std::vector<Status> out;
    for (size_t i = 0; i < children_.size(); ++i) {
      if (!children_[i]->Running() && reported_.insert(i).second) {
        out.push_back(Died(*children_[i], "stopped:"));
      }
    }
    return out;
  }

  bool CanServe() override {
    bool decode_alive = false;
    for (size_t i = 0; i < children_.size(); ++i) {
      const std::string& role = members_[i].role;
      bool alive = children_[i]->Running();
      if (!alive && (role == "proxy" || role == "master" || role == "colocated")) return false;
      decode_alive = decode_alive || (alive && (role == "decode" || role == "colocated"));
    }
    return decode_alive;
  }

  void Stop() override {
    // The proxy first (no new requests), then the instances all at once,
    // the master last (instances unmount their segments from it).
    for (const char* phase : {"proxy", "instances", "master"}) {
      std::vector<ChildProcess*> group;
      for (size_t i = 0; i < children_.size(); ++i) {
        const std::string& role = members_[i].role;
        bool instance = role != "proxy" && role != "master";
        if (phase == std::string_view(instance ? "instances" : role)) {
          group.push_back(children_[i].get());
        }
      }
      for (ChildProcess* c : group) c->Terminate();
      for (ChildProcess* c : group) c->Stop(o_.stop_grace);
    }
    children_.clear();
    if (remove_work_dir_) {
      std::error_code ec;
      fs::remove_all(o_.work_dir, ec);
      remove_work_dir_ = false;
    }
  }

  // A temp work dir goes with a clean Stop(); it stays when start-up
  // failed, since its logs explain why.
  void set_remove_work_dir(bool remove) { remove_work_dir_ = remove; }

 private:
  Status Died(ChildProcess& c, const char* when) {
    return UnavailableError(fmt::format("{} (pid {}) {} {}; log {}, last lines:\n{}", c.name(),
                                        c.pid(), when, c.DescribeExit(), c.log_path(),
                                        c.LogTail(20)));
  }

  StatusOr<ChildProcess*> Spawn(std::string name, std::string role, std::string address,
                                std::vector<std::string> args,
                                std::map<std::string, std::string> env = {}) {
    ChildSpec spec;
    spec.name = name;
    spec.argv = {o_.crescent_bin};
    spec.argv.insert(spec.argv.end(), args.begin(), args.end());
    spec.env = std::move(env);
    spec.log_path = o_.work_dir + "/" + name + ".log";
    ASSIGN_OR_RETURN(auto child, ChildProcess::Spawn(std::move(spec)));
    members_.push_back({name, role, address, child->pid(), child->log_path()});
    children_.push_back(std::move(child));
    return children_.back().get();
  }

  // Waits until `ready` holds for every (child, check) pair; fails fast when
  // a child exits, on cancel, and at the start-up deadline.
  Status WaitReady(const std::vector<std::pair<ChildProcess*, std::function<bool()>>>& checks) {
    std::vector<bool> done(checks.size(), false);
    while (true) {
      bool all = true;
      for (size_t i = 0; i < checks.size(); ++i) {
        if (done[i]) continue;
        if (!checks[i].first->Running()) return Died(*checks[i].first, "failed during start-up:");
        done[i] = checks[i].second();
        all = all && done[i];
      }
      if (all) return OkStatus();
      if (o_.cancel != nullptr && o_.cancel->load()) {
        return CancelledError("start-up interrupted by a signal");
      }
      if (Clock::now() > deadline_) {
        for (size_t i = 0; i < checks.size(); ++i) {
          if (!done[i]) {
            ChildProcess& c = *checks[i].first;
            return DeadlineExceededError(fmt::format(
                "{} (pid {}) was not healthy after {} s; log {}, last lines:\n{}", c.name(),
                c.pid(), o_.start_timeout.count(), c.log_path(), c.LogTail(20)));
          }
        }
      }
      std::this_thread::sleep_for(kPollPeriod);
    }
  }

  // True once GET /health on host:port answers 200.
  std::function<bool()> HealthCheck(uint16_t port) {
    http::ClientOptions co;
    co.connect_timeout = 500ms;
    co.timeout = 2s;
    auto client = std::make_shared<http::Client>(o_.host, port, co);
    return [client] {
      auto r = client->Get("/health");
      return r.ok() && r->status == 200;
    };
  }

  Status WriteMooncakeConfig(uint16_t master_port, uint16_t metadata_port);
  std::vector<std::string> ServeArgs(uint16_t port, const char* kv_role) const;

  ClusterOptions o_;
  Clock::time_point deadline_;
  bool remove_work_dir_ = false;
  std::string front_address_;
  std::string mooncake_path_;
  std::vector<Member> members_;
  std::vector<std::unique_ptr<ChildProcess>> children_;  // in start order, as members_
  std::set<size_t> reported_;  // children_ indices NewlyExited() returned
};

Status ClusterImpl::WriteMooncakeConfig(uint16_t master_port, uint16_t metadata_port) {
  nlohmann::json j = {
      {"local_hostname", o_.host},
      {"metadata_server", fmt::format("http://{}/metadata", Addr(o_.host, metadata_port))},
      {"protocol", "tcp"},
      {"device_name", ""},
      {"master_server_address", Addr(o_.host, master_port)},
      {"global_segment_size", o_.global_segment_size},
      {"local_buffer_size", o_.local_buffer_size},
  };
  mooncake_path_ = o_.work_dir + "/mooncake.json";
  std::ofstream out(mooncake_path_);
  out << j.dump(2) << "\n";
  if (!out) return ErrnoToStatus(errno, "cannot write " + mooncake_path_);
  return OkStatus();
}

std::vector<std::string> ClusterImpl::ServeArgs(uint16_t port, const char* kv_role) const {
  int instances = o_.colocated ? 1 : o_.prefill + o_.decode;
  int threads = o_.threads > 0 ? o_.threads : DefaultThreadsPerInstance(instances);
  std::vector<std::string> args = {
      "serve", "--model", o_.model, "--served-model-name", o_.served_model_name,
      "--host", o_.host, "--port", std::to_string(port), "--device", o_.device,
      "--threads", std::to_string(threads), "--kv-cache-memory-bytes", o_.kv_cache_memory,
      "--max-model-len", std::to_string(o_.max_model_len),
      "--max-num-seqs", std::to_string(o_.max_num_seqs)};
  if (kv_role != nullptr) {
    args.push_back("--kv-transfer-config");
    args.push_back(fmt::format(R"({{"kv_connector":"MooncakeStoreConnector","kv_role":"{}"}})",
                               kv_role));
  }
  args.insert(args.end(), o_.extra_serve_args.begin(), o_.extra_serve_args.end());
  return args;
}

Status ClusterImpl::Run() {
  deadline_ = Clock::now() + o_.start_timeout;
  if (o_.port != 0) RETURN_IF_ERROR(CheckPortFree(o_.host, o_.port));
  const int instances = o_.colocated ? 1 : o_.prefill + o_.decode;
  // Instances, then master gRPC, metadata and metrics, then the front port.
  ASSIGN_OR_RETURN(std::vector<uint16_t> ports, FreePorts(o_.host, instances + 4));
  uint16_t front_port = o_.port != 0 ? o_.port : ports[instances + 3];
  front_address_ = Addr(o_.host, front_port);

  if (o_.colocated) {
    ASSIGN_OR_RETURN(ChildProcess * c,
                     Spawn("instance", "colocated", front_address_, ServeArgs(front_port, nullptr)));
    return WaitReady({{c, HealthCheck(front_port)}});
  }

  std::map<std::string, std::string> env;
  if (o_.kv_connector) {
    uint16_t master_port = ports[instances], metadata_port = ports[instances + 1],
             metrics_port = ports[instances + 2];
    ASSIGN_OR_RETURN(
        ChildProcess * master,
        Spawn("master", "master", Addr(o_.host, master_port),
              {"master", "--host", o_.host, "--port", std::to_string(master_port),
               "--enable-http-metadata-server", "--http-metadata-server-port",
               std::to_string(metadata_port), "--metrics-port", std::to_string(metrics_port)}));
    RETURN_IF_ERROR(WriteMooncakeConfig(master_port, metadata_port));
    env["MOONCAKE_CONFIG_PATH"] = mooncake_path_;
    RETURN_IF_ERROR(WaitReady({{master, HealthCheck(metrics_port)}}));
  }

  // All instances load their model at the same time.
  std::vector<std::pair<ChildProcess*, std::function<bool()>>> checks;
  std::vector<std::string> prefill_addrs, decode_addrs;
  for (int i = 0; i < instances; ++i) {
    bool prefill = i < o_.prefill;
    std::string name = fmt::format("{}-{}", prefill ? "prefill" : "decode",
                                   prefill ? i : i - o_.prefill);
    std::string address = Addr(o_.host, ports[i]);
    const char* role = !o_.kv_connector ? nullptr : prefill ? "kv_producer" : "kv_consumer";
    ASSIGN_OR_RETURN(ChildProcess * c, Spawn(name, prefill ? "prefill" : "decode", address,
                                             ServeArgs(ports[i], role), env));
    checks.push_back({c, HealthCheck(ports[i])});
    (prefill ? prefill_addrs : decode_addrs).push_back(address);
  }
  RETURN_IF_ERROR(WaitReady(checks));

  std::vector<std::string> args = {"proxy", "--model", o_.model, "--host", o_.host, "--port",
                                   std::to_string(front_port), "--scheduling", o_.scheduling};
  if (!prefill_addrs.empty()) args.push_back("--prefill");
  args.insert(args.end(), prefill_addrs.begin(), prefill_addrs.end());
  args.push_back("--decode");
  args.insert(args.end(), decode_addrs.begin(), decode_addrs.end());
  ASSIGN_OR_RETURN(ChildProcess * proxy, Spawn("proxy", "proxy", front_address_, args));
  // The proxy is ready when it answers /health and its /status shows every
  // instance healthy (it probes them itself).
  http::ClientOptions co;
  co.connect_timeout = 500ms;
  co.timeout = 2s;
  auto client = std::make_shared<http::Client>(o_.host, front_port, co);
  size_t want = instances;
  return WaitReady({{proxy, [client, want] {
                       auto r = client->Get("/status");
                       if (!r.ok() || r->status != 200) return false;
                       auto j = nlohmann::json::parse(r->body, nullptr, false);
                       if (!j.is_object() || !j.contains("instances")) return false;
                       size_t healthy = 0;
                       for (const auto& inst : j["instances"]) {
                         if (inst.value("healthy", false)) ++healthy;
                       }
                       return healthy == want;
                     }}});
}

}  // namespace

StatusOr<MemorySizes> AutoMemorySizes(const std::string& model_dir, int max_model_len,
                                      int kv_dtype_bytes) {
  std::string path = model_dir + "/config.json";
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object()) return InvalidArgumentError(path + ": not a JSON object");
  auto get = [&](const char* key) -> int64_t {
    return j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : 0;
  };
  int64_t layers = get("num_hidden_layers"), heads = get("num_attention_heads");
  int64_t kv_heads = get("num_key_value_heads") > 0 ? get("num_key_value_heads") : heads;
  int64_t head_dim = get("head_dim") > 0 ? get("head_dim")
                                         : heads > 0 ? get("hidden_size") / heads : 0;
  if (layers <= 0 || kv_heads <= 0 || head_dim <= 0) {
    return InvalidArgumentError(path + ": cannot size the KV cache (num_hidden_layers, "
                                       "num_key_value_heads, head_dim); pass "
                                       "--kv-cache-memory-bytes, --global-segment-size and "
                                       "--local-buffer-size");
  }
  constexpr uint64_t kMiB = 1ull << 20;
  const uint64_t t = static_cast<uint64_t>(layers * kv_heads * head_dim) * 2 * kv_dtype_bytes;
  auto mib = [&](uint64_t bytes) { return (bytes + kMiB - 1) / kMiB * kMiB; };
  MemorySizes m;
  m.kv_cache = mib(std::max<uint64_t>(std::clamp<uint64_t>(t * 32768, 16 * kMiB, 1024 * kMiB),
                                      t * (max_model_len + 64)));
  m.segment = mib(std::clamp<uint64_t>(t * 8192, 256 * kMiB, 2048 * kMiB));
  m.buffer = mib(std::clamp<uint64_t>(t * 2048, 64 * kMiB, 512 * kMiB));
  return m;
}

std::string SelfExe() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "/proc/self/exe" : p.string();
}

int DefaultThreadsPerInstance(int instances) {
  int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, instances));
}

std::string ExampleCurl(const std::string& base_url, const std::string& model_name) {
  return fmt::format(
      "curl -s {}/v1/completions -H \"Content-Type: application/json\" \\\n"
      "  -d '{{\"model\": \"{}\", \"prompt\": \"San Francisco is a\", \"max_tokens\": 32}}'",
      base_url, model_name);
}

StatusOr<std::unique_ptr<Cluster>> Cluster::Start(ClusterOptions o) {
  if (o.model.empty()) return InvalidArgumentError("no model directory given (--model DIR)");
  if (!fs::exists(fs::path(o.model) / "config.json")) {
    return InvalidArgumentError(
        fmt::format("--model {}: no config.json there (a Hugging Face model directory)", o.model));
  }
  if (!o.colocated && (o.prefill < 0 || o.decode < 1)) {
    return InvalidArgumentError(fmt::format(
        "--prefill {} --decode {}: a cluster needs at least one decode instance (and no "
        "negative counts)",
        o.prefill, o.decode));
  }
  if (o.crescent_bin.empty()) o.crescent_bin = SelfExe();
  if (o.served_model_name.empty()) {
    o.served_model_name = fs::path(o.model).lexically_normal().filename().string();
    if (o.served_model_name.empty()) o.served_model_name = fs::path(o.model).parent_path().filename();
  }
  bool temp_dir = o.work_dir.empty();
  if (temp_dir) {
    std::string tmpl = (fs::temp_directory_path() / "crescent-up-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) return ErrnoToStatus(errno, "cannot create " + tmpl);
    o.work_dir = tmpl;
  } else {
    std::error_code ec;
    fs::create_directories(o.work_dir, ec);
    if (ec) return InternalError("cannot create --work-dir " + o.work_dir + ": " + ec.message());
  }
  // Sized from the model when not given (only what this layout uses).
  const bool uses_store = o.kv_connector && !o.colocated;
  if (o.kv_cache_memory.empty() ||
      (uses_store && (o.global_segment_size.empty() || o.local_buffer_size.empty()))) {
    // KV is float32 on the CPU backend, bfloat16 on the CUDA one.
    ASSIGN_OR_RETURN(MemorySizes m,
                     AutoMemorySizes(o.model, o.max_model_len, o.device == "cuda" ? 2 : 4));
    auto set = [](std::string& field, uint64_t bytes) {
      if (field.empty()) field = std::to_string(bytes >> 20) + "MiB";
    };
    set(o.kv_cache_memory, m.kv_cache);
    set(o.global_segment_size, m.segment);
    set(o.local_buffer_size, m.buffer);
  }
  bool keep = o.keep_work_dir;
  auto cluster = std::make_unique<ClusterImpl>(std::move(o));
  Status status = cluster->Run();
  if (!status.ok()) {
    cluster->Stop();
    return status;
  }
  cluster->set_remove_work_dir(temp_dir && !keep);
  return std::unique_ptr<Cluster>(std::move(cluster));
}

}  // namespace crescent::cluster
