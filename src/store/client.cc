// Client: setup, heartbeat, re-registration after a master restart, and
// the index operations. Data paths are in client_io.cc.
#include <sys/mman.h>
#include <unistd.h>

#include <random>

#include "common/logging.h"
#include "store/client_internal.h"
#include "store/store_format.h"

namespace crescent::store {
namespace {

std::string RandomHex(int digits) {
  std::random_device rd;
  std::mt19937_64 rng((uint64_t{rd()} << 32) ^ rd() ^ static_cast<uint64_t>(getpid()));
  std::string out;
  const char* hex = "0123456789abcdef";
  for (int i = 0; i < digits; ++i) out += hex[rng() % 16];
  return out;
}

}  // namespace

Staging& Staging::operator=(Staging&& o) noexcept {
  if (this != &o) {
    if (owner_) owner_->Unstage(offset_, size_);
    owner_ = o.owner_;
    data_ = o.data_;
    offset_ = o.offset_;
    size_ = o.size_;
    o.owner_ = nullptr;
  }
  return *this;
}

Staging::~Staging() {
  if (owner_) owner_->Unstage(offset_, size_);
}

StatusOr<std::unique_ptr<Client>> Client::Create(const ClientOptions& options) {
  auto client = std::make_unique<ClientImpl>(options);
  RETURN_IF_ERROR(client->Init());
  return std::unique_ptr<Client>(std::move(client));
}

ClientImpl::ClientImpl(const ClientOptions& options) : options_(options) {}

Status ClientImpl::Init() {
  const auto& cfg = options_.config;
  client_id_ = cfg.local_hostname + ":" + std::to_string(getpid()) + ":" + RandomHex(12);
  segment_name_ = options_.segment_name.empty() ? client_id_ : options_.segment_name;
  if (options_.replica_num == 0 || options_.replica_num > kMaxReplicaNum) {
    return InvalidArgumentError("replica_num must be 1 to " + std::to_string(kMaxReplicaNum));
  }
  master_ = MasterClient::Create(cfg.master_server_address,
                                 MasterClientOptions{options_.rpc_timeout, options_.use_fast_port});
  // Up to 64 batch RPCs of each kind in flight, so that concurrent callers
  // mostly send their own call on their own pooled connection: measured
  // (interleaved store-bench, 8 and 32 clients) against 2 in flight, which
  // batches more but wakes each waiter twice, 64 is 1.3-1.6x faster.
  constexpr size_t kMaxItems = 512;
  constexpr int kInFlight = 64;
  put_start_rpc_ = std::make_unique<Coalescer<PutStartArgs, StatusOr<std::vector<Replica>>>>(
      [this](const std::vector<PutStartArgs>& items) {
        auto r = master_->BatchPutStart(items);
        if (r.ok()) return std::move(*r);
        return std::vector<StatusOr<std::vector<Replica>>>(items.size(), r.status());
      },
      kMaxItems, kInFlight);
  put_end_rpc_ = std::make_unique<Coalescer<PutEndItem, Status>>(
      [this](const std::vector<PutEndItem>& items) {
        std::vector<std::string> keys;
        std::vector<uint32_t> crcs;
        for (const auto& [k, c] : items) {
          keys.push_back(k);
          crcs.push_back(c);
        }
        auto r = master_->BatchPutEnd(keys, crcs);
        if (r.ok()) return std::move(*r);
        return std::vector<Status>(items.size(), r.status());
      },
      kMaxItems, kInFlight);
  commit_rpc_ = std::make_unique<Coalescer<CommitArgs, Status>>(
      [this](const std::vector<CommitArgs>& items) {
        auto r = master_->BatchCommit(items);
        if (r.ok()) return std::move(*r);
        return std::vector<Status>(items.size(), r.status());
      },
      kMaxItems, kInFlight);
  get_rpc_ = std::make_unique<Coalescer<std::string, StatusOr<ObjectInfo>>>(
      [this](const std::vector<std::string>& keys) {
        auto r = master_->BatchGetReplicaList(keys);
        if (r.ok()) return std::move(*r);
        return std::vector<StatusOr<ObjectInfo>>(keys.size(), r.status());
      },
      kMaxItems, kInFlight);
  // Fail early, naming the address, when the master is not there.
  RETURN_IF_ERROR(master_->Health().status());

  metadata_ = options_.metadata;
  if (!metadata_) {
    ASSIGN_OR_RETURN(auto metadata, transfer::OpenMetadataStore(cfg.metadata));
    metadata_ = std::move(metadata);
  }
  ASSIGN_OR_RETURN(auto engine_options,
                   transfer::TransferEngineOptionsFromConfig(cfg, segment_name_));
  if (options_.tcp_only) engine_options.policy = transfer::TransportPolicy::kTcpOnly;
  engine_options.transfer_timeout = options_.transfer_timeout;
  ASSIGN_OR_RETURN(engine_, transfer::TransferEngine::Create(engine_options, metadata_));

  if (cfg.local_buffer_size > 0) {
    void* p = mmap(nullptr, cfg.local_buffer_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      return ErrnoToStatus(errno, "store client: mmap of local_buffer_size " +
                                      std::to_string(cfg.local_buffer_size) + " bytes");
    }
    local_buffer_ = static_cast<uint8_t*>(p);
    local_buffer_size_ = cfg.local_buffer_size;
    RETURN_IF_ERROR(engine_->RegisterMemory(local_buffer_, local_buffer_size_).status());
    staging_ = std::make_unique<OffsetAllocator>(local_buffer_size_, kAllocAlignment);
    registered_.push_back({reinterpret_cast<uintptr_t>(local_buffer_), local_buffer_size_});
  }
  if (cfg.global_segment_size > 0) {
    ASSIGN_OR_RETURN(segment_, engine_->AllocateSegmentMemory(cfg.global_segment_size));
    RETURN_IF_ERROR(
        master_
            ->MountSegment(client_id_, SegmentSpec{segment_name_, segment_.segment_offset,
                                                   segment_.length})
            .status());
  }
  auto ping = master_->Ping(client_id_);
  RETURN_IF_ERROR(ping.status());
  master_id_ = ping->master_id;
  heartbeat_ = std::thread([this] { HeartbeatLoop(); });
  spdlog::info("store client {}: segment {} ({} bytes) mounted with master {} ({})", client_id_,
               segment_name_, segment_.length, cfg.master_server_address, master_id_);
  return OkStatus();
}

ClientImpl::~ClientImpl() {
  {
    std::lock_guard lock(hb_mu_);
    stopping_ = true;
  }
  hb_cv_.notify_all();
  if (heartbeat_.joinable()) heartbeat_.join();
  if (master_) RetireSlab(std::chrono::microseconds(0));
  if (master_ && segment_.length > 0) {
    master_->UnmountSegment(client_id_, segment_name_, segment_.segment_offset).IgnoreError();
  }
  engine_.reset();  // stops transports before the local buffer goes
  if (local_buffer_) munmap(local_buffer_, local_buffer_size_);
}

void ClientImpl::HeartbeatLoop() {
  bool need_remount = false;
  bool reachable = true;
  std::unique_lock lock(hb_mu_);
  while (!stopping_) {
    hb_cv_.wait_for(lock, options_.ping_interval);
    if (stopping_) break;
    lock.unlock();
    auto ping = master_->Ping(client_id_);
    if (!ping.ok()) {
      if (reachable) spdlog::warn("store client {}: {}", client_id_, ping.status().ToString());
      reachable = false;
    } else {
      if (!reachable) spdlog::info("store client {}: master reachable again", client_id_);
      reachable = true;
      bool restarted;
      {
        std::lock_guard g(mu_);
        restarted = ping->master_id != master_id_;
        master_id_ = ping->master_id;
      }
      if (restarted || !ping->result.known) {
        need_remount = true;
        RetireSlab(std::chrono::microseconds(0), /*forget=*/true);
      }
      // An idle reservation goes back to the pool.
      RetireSlab(std::chrono::seconds(2));
      if (need_remount) {
        Status s = Remount();
        need_remount = !s.ok();
        if (!s.ok()) spdlog::warn("store client {}: re-mount failed: {}", client_id_, s.ToString());
      } else {
        ApplyEvents(ping->result);
      }
    }
    lock.lock();
  }
}

Status ClientImpl::Remount() {
  if (segment_.length == 0) return OkStatus();
  std::vector<SegmentObject> held;
  {
    std::lock_guard lock(mu_);
    held.reserve(held_.size());
    for (const auto& [offset, o] : held_) held.push_back(o);
  }
  ASSIGN_OR_RETURN(uint64_t taken,
                   master_->MountSegment(client_id_,
                                         SegmentSpec{segment_name_, segment_.segment_offset,
                                                     segment_.length},
                                         held));
  spdlog::info("store client {}: re-mounted segment with master, re-registered {}/{} objects",
               client_id_, taken, held.size());
  return OkStatus();
}

void ClientImpl::ApplyEvents(const PingResult& result) {
  std::lock_guard lock(mu_);
  if (result.snapshot) held_.clear();
  for (const auto& e : result.events) {
    if (e.object.segment != segment_name_ || e.object.base != segment_.segment_offset) continue;
    if (e.added) {
      held_[e.object.offset] = e.object;
    } else {
      auto it = held_.find(e.object.offset);
      if (it != held_.end() && it->second.key == e.object.key) held_.erase(it);
    }
  }
}

size_t ClientImpl::held_objects() const {
  std::lock_guard lock(mu_);
  return held_.size();
}

StatusOr<Staging> ClientImpl::Stage(uint64_t size) {
  if (size > local_buffer_size_) {
    return OutOfRangeError("value of " + std::to_string(size) +
                           " bytes does not fit the local buffer (local_buffer_size " +
                           std::to_string(local_buffer_size_) +
                           "); raise it or use PutFrom/GetInto with registered memory");
  }
  std::unique_lock lock(staging_mu_);
  const auto deadline = std::chrono::steady_clock::now() + options_.transfer_timeout;
  for (;;) {
    if (auto off = staging_->Allocate(size)) {
      return Staging(this, local_buffer_ + *off, *off, size);
    }
    if (staging_cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      return ResourceExhaustedError("local buffer stayed full for " +
                                    std::to_string(options_.transfer_timeout.count()) +
                                    " ms; raise local_buffer_size or put fewer bytes at once");
    }
  }
}

void ClientImpl::Unstage(uint64_t offset, uint64_t size) {
  {
    std::lock_guard lock(staging_mu_);
    staging_->Free(offset, size);
  }
  staging_cv_.notify_all();
}

Status ClientImpl::RegisterBuffer(void* data, size_t size) {
  if (data == nullptr || size == 0) return InvalidArgumentError("RegisterBuffer: empty buffer");
  RETURN_IF_ERROR(engine_->RegisterMemory(data, size).status());
  std::lock_guard lock(mu_);
  registered_.push_back({reinterpret_cast<uintptr_t>(data), size});
  return OkStatus();
}

Status ClientImpl::UnregisterBuffer(void* data) {
  RETURN_IF_ERROR(engine_->UnregisterMemory(data));
  std::lock_guard lock(mu_);
  std::erase_if(registered_, [&](const auto& r) { return r.first == reinterpret_cast<uintptr_t>(data); });
  return OkStatus();
}

bool ClientImpl::IsRegistered(const void* p, uint64_t length) const {
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard lock(mu_);
  for (const auto& [start, len] : registered_) {
    if (a >= start && a + length <= start + len) return true;
  }
  return false;
}

uint8_t* ClientImpl::OwnSegmentPointer(uint64_t address, uint64_t length) const {
  if (segment_.length == 0 || address < segment_.segment_offset ||
      address + length > segment_.segment_offset + segment_.length) {
    return nullptr;
  }
  return static_cast<uint8_t*>(segment_.address) + (address - segment_.segment_offset);
}

StatusOr<bool> ClientImpl::Exist(std::string_view key) { return master_->Exist(key); }

StatusOr<std::vector<bool>> ClientImpl::BatchExist(const std::vector<std::string>& keys) {
  ASSIGN_OR_RETURN(auto results, master_->BatchExist(keys));
  std::vector<bool> out;
  out.reserve(results.size());
  for (auto& r : results) {
    RETURN_IF_ERROR(r.status());
    out.push_back(*r);
  }
  return out;
}

Status ClientImpl::Remove(std::string_view key) {
  RETURN_IF_ERROR(ValidateKey(key));
  return master_->Remove(key);
}

StatusOr<uint64_t> ClientImpl::RemoveAll() { return master_->RemoveAll(); }

}  // namespace crescent::store
