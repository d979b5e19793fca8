#include "transfer/transfer_engine.h"

#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <random>
#include <unordered_map>

#include "common/crc32c.h"
#include "common/logging.h"
#include "common/size.h"
#include "fmt/format.h"
#include "transfer/batch.h"
#include "transfer/metadata/metadata_keys.h"
#include "transfer/memory_registry.h"
#include "transfer/segment_descriptor.h"
#include "transfer/transport.h"

namespace crescent::transfer {

using Clock = std::chrono::steady_clock;

std::string_view TransferStateName(TransferState state) {
  switch (state) {
    case TransferState::kPending: return "pending";
    case TransferState::kCompleted: return "completed";
    case TransferState::kFailed: return "failed";
    case TransferState::kTimeout: return "timeout";
  }
  return "?";
}

StatusOr<TransferEngineOptions> TransferEngineOptionsFromConfig(const MooncakeConfig& config,
                                                                std::string segment_name) {
  if (config.protocol == "rdma")
    return UnimplementedError(fmt::format(
        "{}: protocol \"rdma\": this build of crescent has no RDMA transport; use \"protocol\": "
        "\"tcp\" (same-host peers use shared memory automatically)",
        config.source));
  if (config.protocol != "tcp")
    return InvalidArgumentError(fmt::format("{}: protocol \"{}\" is unknown; use \"tcp\"",
                                            config.source, config.protocol));
  TransferEngineOptions o;
  o.segment_name = std::move(segment_name);
  o.local_hostname = config.local_hostname;
  return o;
}

Status TransferEngine::Transfer(std::span<const TransferRequest> requests) {
  ASSIGN_OR_RETURN(BatchId batch, AllocateBatch(requests.size()));
  Status s = SubmitTransfer(batch, requests);
  if (s.ok()) s = WaitBatch(batch, std::chrono::hours(24));
  FreeBatch(batch).IgnoreError();
  return s;
}

namespace {

// A segment we opened: its descriptor and the channels that reach it.
struct PeerSegment {
  std::string name;
  bool own = false;  // our own segment: memcpy through the registry
  std::unique_ptr<Channel> shm;    // same host; null otherwise
  std::unique_ptr<Channel> local;  // own segment only
  std::mutex mu;
  std::shared_ptr<const SegmentDescriptor> desc;  // guarded by mu
  std::unique_ptr<Channel> tcp;                   // guarded by mu; created on first use
};

class TransferEngineImpl final : public TransferEngine {
 public:
  TransferEngineImpl(const TransferEngineOptions& options, std::shared_ptr<MetadataStore> metadata)
      : options_(options), metadata_(std::move(metadata)), key_(keys::SegmentKey(options.cluster_id, options.segment_name)) {
    std::random_device rd;
    instance_ = (uint64_t{rd()} << 32) ^ rd() ^ static_cast<uint64_t>(Clock::now().time_since_epoch().count());
  }

  ~TransferEngineImpl() override {
    metadata_->Delete(key_).IgnoreError();
    {
      std::lock_guard lock(mu_);
      segments_.clear();  // channels fail what is queued and join their workers
    }
    transports_.clear();  // servers stop before the memory they serve goes away
  }

  Status Start() {
    RETURN_IF_ERROR(keys::ValidateClusterId(options_.cluster_id));
    if (options_.segment_name.empty())
      return InvalidArgumentError("transfer engine: segment_name is empty; give the segment a name");
    if (options_.connections_per_peer < 1 || options_.connections_per_peer > 64)
      return InvalidArgumentError("transfer engine: connections_per_peer must be in 1..64");
    if (options_.slice_size < 4096)
      return InvalidArgumentError("transfer engine: slice_size must be at least 4096 bytes");
    if (options_.policy != TransportPolicy::kTcpOnly) transports_.push_back(NewShmTransport(options_));
    transports_.push_back(NewTcpTransport(options_));
    desc_.name = options_.segment_name;
    desc_.instance = instance_;
    desc_.host_id = HostId();
    desc_.pid = getpid();
    LocalSegment local{options_.segment_name, instance_, &registry_};
    for (auto& t : transports_) RETURN_IF_ERROR(t->Serve(local, &desc_));
    return Publish();
  }

  const std::string& segment_name() const override { return options_.segment_name; }

  StatusOr<RegisteredRegion> AllocateSegmentMemory(uint64_t length) override {
    ASSIGN_OR_RETURN(auto region, registry_.AllocateShareable(length));
    for (auto& t : transports_) t->Expose(*region);
    RETURN_IF_ERROR(Publish());
    return region->Public();
  }

  Status FreeSegmentMemory(void* address) override { return Remove(address, true); }

  StatusOr<RegisteredRegion> RegisterMemory(void* address, uint64_t length) override {
    ASSIGN_OR_RETURN(auto region, registry_.Register(address, length));
    RETURN_IF_ERROR(Publish());
    return region;
  }

  Status UnregisterMemory(void* address) override { return Remove(address, false); }

  std::vector<RegisteredRegion> LocalRegions() const override { return registry_.Regions(); }

  StatusOr<SegmentHandle> OpenSegment(std::string_view name) override;
  Status RefreshSegment(SegmentHandle segment) override;
  StatusOr<SegmentInfo> GetSegmentInfo(SegmentHandle segment) override;
  Status CloseSegment(SegmentHandle segment) override;

  StatusOr<BatchId> AllocateBatch(size_t capacity) override {
    if (capacity == 0) return InvalidArgumentError("AllocateBatch: capacity must be > 0");
    std::lock_guard lock(mu_);
    BatchId id = next_batch_++;
    batches_[id] = std::make_shared<Batch>(capacity);
    return id;
  }

  Status SubmitTransfer(BatchId batch, std::span<const TransferRequest> requests) override;

  StatusOr<TransferStatus> GetTransferStatus(BatchId batch, size_t index) override {
    ASSIGN_OR_RETURN(auto b, FindBatch(batch));
    if (index >= b->submitted())
      return OutOfRangeError(fmt::format("batch {}: request {} was never submitted ({} were)",
                                         batch, index, b->submitted()));
    return b->Get(index);
  }

  Status WaitBatch(BatchId batch, std::chrono::milliseconds timeout) override {
    ASSIGN_OR_RETURN(auto b, FindBatch(batch));
    return b->Wait(timeout);
  }

  Status FreeBatch(BatchId batch) override {
    std::lock_guard lock(mu_);
    auto it = batches_.find(batch);
    if (it == batches_.end()) return NotFoundError(fmt::format("batch {} does not exist", batch));
    if (!it->second->AllTerminal())
      return FailedPreconditionError(
          fmt::format("batch {} still has pending requests; wait for them first", batch));
    batches_.erase(it);
    return OkStatus();
  }

 private:
  Status Publish() {
    std::lock_guard lock(publish_mu_);
    desc_.buffers = registry_.Buffers();
    Status s = metadata_->Put(key_, EncodeSegmentDescriptor(desc_));
    return s.WithContext(fmt::format("publishing segment '{}' to {}", options_.segment_name,
                                     metadata_->Describe()));
  }

  Status Remove(void* address, bool owned) {
    ASSIGN_OR_RETURN(auto region, registry_.Remove(address, owned));
    for (auto& t : transports_) t->Revoke(*region);
    Status s = Publish();
    WaitUntilUnused(region);
    return s;
  }

  StatusOr<std::shared_ptr<Batch>> FindBatch(BatchId id) {
    std::lock_guard lock(mu_);
    auto it = batches_.find(id);
    if (it == batches_.end()) return NotFoundError(fmt::format("batch {} does not exist", id));
    return it->second;
  }

  StatusOr<std::shared_ptr<PeerSegment>> FindSegment(SegmentHandle h) {
    std::lock_guard lock(mu_);
    auto it = segments_.find(h);
    if (it == segments_.end())
      return InvalidArgumentError(fmt::format("segment handle {} is not open (OpenSegment first)", h));
    return it->second;
  }

  StatusOr<std::shared_ptr<const SegmentDescriptor>> Lookup(std::string_view name) {
    std::string key = keys::SegmentKey(options_.cluster_id, name);
    auto value = metadata_->Get(key);
    if (!value.ok()) {
      if (value.status().code() == StatusCode::kNotFound)
        return NotFoundError(fmt::format(
            "segment '{}' is not published in {} (key '{}'): is its process running and using "
            "the same metadata server?",
            name, metadata_->Describe(), key));
      return value.status().WithContext(fmt::format("looking up segment '{}'", name));
    }
    auto desc = DecodeSegmentDescriptor(*value);
    if (!desc.ok()) return desc.status().WithContext(fmt::format("segment '{}'", name));
    return std::make_shared<const SegmentDescriptor>(std::move(desc).value());
  }

  // Where one validated request goes.
  struct Route {
    Channel* channel;
    const BufferDescriptor* buffer;  // null for our own segment
  };
  StatusOr<Route> Validate(const TransferRequest& r, PeerSegment& seg,
                           const SegmentDescriptor* desc);

  // Constant after construction.
  const TransferEngineOptions options_;
  const std::shared_ptr<MetadataStore> metadata_;
  const std::string key_;
  uint64_t instance_;
  std::vector<std::unique_ptr<Transport>> transports_;  // shm (unless tcp only), tcp

  MemoryRegistry registry_;  // thread-safe itself
  std::mutex publish_mu_;
  SegmentDescriptor desc_;   // guarded by publish_mu_

  std::mutex mu_;
  // Guarded by mu_.
  std::map<SegmentHandle, std::shared_ptr<PeerSegment>> segments_;
  std::unordered_map<std::string, SegmentHandle> segment_by_name_;
  SegmentHandle next_segment_ = 1;
  std::unordered_map<BatchId, std::shared_ptr<Batch>> batches_;
  BatchId next_batch_ = 1;
};

StatusOr<SegmentHandle> TransferEngineImpl::OpenSegment(std::string_view name) {
  {
    std::lock_guard lock(mu_);
    auto it = segment_by_name_.find(std::string(name));
    if (it != segment_by_name_.end()) return it->second;
  }
  auto seg = std::make_shared<PeerSegment>();
  seg->name = std::string(name);
  if (name == options_.segment_name) {
    seg->own = true;
    seg->local = NewLocalChannel(&registry_);
  } else {
    ASSIGN_OR_RETURN(seg->desc, Lookup(name));
    if (options_.policy != TransportPolicy::kTcpOnly) {
      for (auto& t : transports_) {
        if (t->name() != "shm" || !t->CanReach(*seg->desc)) continue;
        auto ch = t->Connect(*seg->desc);
        if (ch.ok()) {
          seg->shm = std::move(ch).value();
        } else {
          spdlog::warn("segment '{}': shared memory unavailable ({}); using tcp", name,
                       ch.status().ToString());
        }
      }
    }
    if (options_.policy == TransportPolicy::kShmOnly && !seg->shm)
      return FailedPreconditionError(fmt::format(
          "segment '{}' cannot be reached through shared memory (another host, or its shm socket "
          "is not reachable); use the tcp or auto policy",
          name));
  }
  std::lock_guard lock(mu_);
  auto [it, inserted] = segment_by_name_.emplace(seg->name, next_segment_);
  if (inserted) segments_[next_segment_++] = std::move(seg);
  return it->second;
}

Status TransferEngineImpl::RefreshSegment(SegmentHandle h) {
  ASSIGN_OR_RETURN(auto seg, FindSegment(h));
  if (seg->own) return OkStatus();
  ASSIGN_OR_RETURN(auto desc, Lookup(seg->name));
  std::lock_guard lock(seg->mu);
  if (desc->instance != seg->desc->instance)
    return FailedPreconditionError(fmt::format(
        "segment '{}' was restarted by another process (pid {}); close and reopen it", seg->name,
        desc->pid));
  seg->desc = std::move(desc);
  return OkStatus();
}

StatusOr<SegmentInfo> TransferEngineImpl::GetSegmentInfo(SegmentHandle h) {
  ASSIGN_OR_RETURN(auto seg, FindSegment(h));
  SegmentInfo info;
  info.name = seg->name;
  if (seg->own) {
    info.host = options_.local_hostname;
    {
      std::lock_guard lock(publish_mu_);
      info.tcp_port = desc_.tcp_port;
    }
    info.shared_memory = true;
    info.regions = registry_.Regions();
    for (auto& r : info.regions) r.address = nullptr;
    return info;
  }
  std::lock_guard lock(seg->mu);
  info.host = seg->desc->host;
  info.tcp_port = seg->desc->tcp_port;
  info.shared_memory = seg->shm != nullptr;
  for (const auto& b : seg->desc->buffers)
    info.regions.push_back(RegisteredRegion{nullptr, b.offset, b.length, b.shm});
  return info;
}

Status TransferEngineImpl::CloseSegment(SegmentHandle h) {
  std::shared_ptr<PeerSegment> seg;
  {
    std::lock_guard lock(mu_);
    auto it = segments_.find(h);
    if (it == segments_.end()) return NotFoundError(fmt::format("segment handle {} is not open", h));
    seg = std::move(it->second);
    segments_.erase(it);
    segment_by_name_.erase(seg->name);
  }
  return OkStatus();  // channels close when the last submit using them returns
}

StatusOr<TransferEngineImpl::Route> TransferEngineImpl::Validate(const TransferRequest& r,
                                                                 PeerSegment& seg,
                                                                 const SegmentDescriptor* desc) {
  if (r.opcode != OpCode::kRead && r.opcode != OpCode::kWrite)
    return InvalidArgumentError(fmt::format("opcode {} is neither READ nor WRITE",
                                            static_cast<int>(r.opcode)));
  if (r.length == 0) return InvalidArgumentError("length is 0");
  if (!registry_.ContainsLocal(r.local, r.length))
    return InvalidArgumentError(fmt::format(
        "local range {} (+{} bytes) is not inside memory registered with this engine; "
        "RegisterMemory or AllocateSegmentMemory it first",
        r.local, r.length));
  if (seg.own) {
    RETURN_IF_ERROR(registry_.FindByOffset(r.remote_offset, r.length).status().WithContext(
        fmt::format("own segment '{}'", seg.name)));
    return Route{seg.local.get(), nullptr};
  }
  const BufferDescriptor* b = desc->Find(r.remote_offset, r.length);
  if (!b)
    return OutOfRangeError(fmt::format(
        "remote range [{}, {}) is outside the registered buffers of segment '{}' ({})",
        r.remote_offset, r.remote_offset + r.length, seg.name, desc->DescribeBuffers()));
  if (seg.shm && b->shm && options_.policy != TransportPolicy::kTcpOnly)
    return Route{seg.shm.get(), b};
  if (options_.policy == TransportPolicy::kShmOnly)
    return FailedPreconditionError(fmt::format(
        "segment '{}' buffer at offset {} is not shared memory (registered with RegisterMemory, "
        "not AllocateSegmentMemory); the shm-only policy cannot reach it",
        seg.name, b->offset));
  std::lock_guard lock(seg.mu);
  if (!seg.tcp) {
    for (auto& t : transports_) {
      if (t->name() == "tcp") {
        ASSIGN_OR_RETURN(seg.tcp, t->Connect(*desc));
      }
    }
  }
  return Route{seg.tcp.get(), b};
}

Status TransferEngineImpl::SubmitTransfer(BatchId batch_id,
                                          std::span<const TransferRequest> requests) {
  ASSIGN_OR_RETURN(auto batch, FindBatch(batch_id));
  if (requests.empty()) return OkStatus();
  // Validate everything before anything moves.
  struct Planned {
    std::shared_ptr<PeerSegment> seg;
    std::shared_ptr<const SegmentDescriptor> desc;
  };
  std::unordered_map<SegmentHandle, Planned> segs;
  std::vector<Route> routes;
  routes.reserve(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const TransferRequest& r = requests[i];
    auto [it, fresh] = segs.try_emplace(r.segment);
    Planned& p = it->second;
    if (fresh) {
      auto seg = FindSegment(r.segment);
      if (!seg.ok()) return seg.status().WithContext(fmt::format("request {}", i));
      p.seg = std::move(seg).value();
      std::lock_guard lock(p.seg->mu);
      p.desc = p.seg->desc;
    }
    auto route = Validate(r, *p.seg, p.desc.get());
    if (!route.ok() && route.status().code() == StatusCode::kOutOfRange && !p.seg->own) {
      // The peer may have registered memory since we read its descriptor.
      if (RefreshSegment(r.segment).ok()) {
        std::lock_guard lock(p.seg->mu);
        p.desc = p.seg->desc;
        route = Validate(r, *p.seg, p.desc.get());
      }
    }
    if (!route.ok()) return route.status().WithContext(fmt::format("request {}", i));
    routes.push_back(*route);
  }

  ASSIGN_OR_RETURN(size_t first, batch->Reserve(requests.size()));
  Clock::time_point deadline = Clock::now() + options_.transfer_timeout;
  // Slices per channel; tcp channels start first so that their background
  // work overlaps the synchronous memcpy of shm channels.
  std::vector<std::pair<Channel*, std::vector<Slice>>> work;
  for (size_t i = 0; i < requests.size(); ++i) {
    const TransferRequest& r = requests[i];
    Channel* ch = routes[i].channel;
    auto w = std::find_if(work.begin(), work.end(), [&](const auto& e) { return e.first == ch; });
    if (w == work.end()) w = work.insert(work.end(), {ch, {}});
    uint64_t step = ch->max_slice_bytes();
    uint64_t count = r.length / step + (r.length % step != 0);
    // The checksum: in-process copies compute it while copying; for other
    // routes, a write's source is summed now and a read's destination once
    // all of its slices have landed.
    const bool copy_crc = r.crc32c != nullptr && step == UINT64_MAX;
    if (r.crc32c != nullptr && !copy_crc && r.opcode == OpCode::kWrite)
      *r.crc32c = Crc32c(r.local, r.length);
    const bool finish_crc = r.crc32c != nullptr && !copy_crc && r.opcode == OpCode::kRead;
    batch->Start(first + i, static_cast<uint32_t>(count), finish_crc ? r.crc32c : nullptr,
                 r.local, r.length);
    for (uint64_t k = 0, done = 0; k < count; ++k, done += step) {
      Slice s;
      s.opcode = r.opcode;
      s.local = static_cast<uint8_t*>(r.local) + done;
      s.remote_offset = r.remote_offset + done;
      s.length = std::min(step, r.length - done);
      if (routes[i].buffer) {
        s.buffer_id = routes[i].buffer->id;
        s.buffer_offset = routes[i].buffer->offset;
      }
      s.deadline = deadline;
      s.batch = batch.get();
      s.request_index = static_cast<uint32_t>(first + i);
      if (copy_crc) s.crc32c = r.crc32c;
      w->second.push_back(s);
    }
  }
  std::stable_partition(work.begin(), work.end(),
                        [](const auto& e) { return e.first->max_slice_bytes() != UINT64_MAX; });
  for (auto& [ch, slices] : work) ch->Submit(slices);
  return OkStatus();
}

}  // namespace

StatusOr<std::unique_ptr<TransferEngine>> TransferEngine::Create(
    const TransferEngineOptions& options, std::shared_ptr<MetadataStore> metadata) {
  if (!metadata) return InvalidArgumentError("transfer engine: no metadata store given");
  auto engine = std::make_unique<TransferEngineImpl>(options, std::move(metadata));
  RETURN_IF_ERROR(engine->Start());
  return std::unique_ptr<TransferEngine>(std::move(engine));
}

}  // namespace crescent::transfer
