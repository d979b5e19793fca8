#include "kvconnector/store_connector.h"

#include <fmt/format.h>
#include <sys/mman.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "common/logging.h"
#include "common/metrics.h"
#include "kvconnector/chunk_keys.h"
#include "model/backend.h"
#include "store/client.h"
#include "store/offset_allocator.h"

namespace crescent::kvconnector {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kStagingAlignment = 4096;
// After a failed lookup (master down, say) skip lookups this long rather
// than make every new request wait for the same failure.
constexpr auto kLookupBackoff = std::chrono::seconds(1);
// Requests whose lookup was made but whose load or prefill never came
// (aborted while waiting): forget them beyond this many.
constexpr size_t kMaxTrackedRequests = 4096;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Metric handles; all null when the connector has no registry.
struct Metrics {
  metrics::Counter* lookups = nullptr;
  metrics::Counter* loaded_tokens = nullptr;
  metrics::Counter* computed_tokens = nullptr;
  metrics::Counter* saved_tokens = nullptr;
  metrics::Counter* load_bytes = nullptr;
  metrics::Counter* save_bytes = nullptr;
  metrics::Counter* lookup_failures = nullptr;
  metrics::Counter* load_failures = nullptr;
  metrics::Counter* save_failures = nullptr;
  metrics::Histogram* load_seconds = nullptr;
  metrics::Histogram* save_seconds = nullptr;

  explicit Metrics(metrics::Registry* r) {
    if (r == nullptr) return;
    lookups = &r->AddCounter("crescent:kv_connector_lookups_total",
                             "Store lookups for new requests' prompt KV").Get();
    loaded_tokens = &r->AddCounter("crescent:kv_connector_loaded_tokens_total",
                                   "Prompt tokens whose KV was loaded from the store").Get();
    computed_tokens = &r->AddCounter("crescent:kv_connector_computed_tokens_total",
                                     "Prompt tokens computed by this instance").Get();
    saved_tokens = &r->AddCounter("crescent:kv_connector_saved_tokens_total",
                                  "Prompt tokens whose KV this instance put into the store").Get();
    auto& bytes = r->AddCounter("crescent:kv_connector_bytes_total",
                                "KV bytes moved between this instance and the store",
                                {"direction"});
    load_bytes = &bytes.Get({"load"});
    save_bytes = &bytes.Get({"save"});
    auto& failures = r->AddCounter("crescent:kv_connector_failures_total",
                                   "Store operations that failed (the tokens were computed)",
                                   {"op"});
    lookup_failures = &failures.Get({"lookup"});
    load_failures = &failures.Get({"load"});
    save_failures = &failures.Get({"save"});
    load_seconds = &r->AddHistogram("crescent:kv_connector_load_seconds",
                                    "Time to load a request's KV from the store",
                                    metrics::LatencyBuckets())
                        .Get();
    save_seconds = &r->AddHistogram("crescent:kv_connector_save_seconds",
                                    "Time from a finished prefill until its KV is stored",
                                    metrics::LatencyBuckets())
                        .Get();
  }
};

void Inc(metrics::Counter* c, std::atomic<uint64_t>* stat, uint64_t v = 1) {
  stat->fetch_add(v, std::memory_order_relaxed);
  if (c != nullptr) c->Inc(static_cast<double>(v));
}

class StoreConnectorImpl : public StoreConnector {
 public:
  StoreConnectorImpl(const StoreConnectorOptions& options, model::Backend* backend)
      : options_(options), backend_(backend), block_bytes_(backend->kv_layout().BlockBytes()),
        metrics_(options.registry) {
    lineage_.model_fingerprint = backend->model_fingerprint();
    lineage_.layout_tag = backend->kv_layout().Tag();
    lineage_.tp_rank = options.tp_rank;
    lineage_.tp_size = options.tp_size;
    lineage_.block_size = backend->kv_layout().block_size;
    lineage_.chunk_tokens = options.chunk_tokens;
    key_prefix_ = lineage_.KeyPrefix();
  }

  ~StoreConnectorImpl() override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    load_cv_.notify_all();
    if (saver_.joinable()) saver_.join();
    // The engine (which waits for its loads) is gone: the queue is empty.
    if (loader_.joinable()) loader_.join();
    for (auto& [job, writes] : staged_writes_)
      for (const StagedWrite& w : writes) Free(w.slice);
    ReleaseHolders(/*all=*/true);
    if (host_registered_) (void)backend_->UnregisterHostBuffer({staging_, staging_size_});
    if (client_ && staging_ != nullptr) (void)client_->UnregisterBuffer(staging_);
    if (client_ && !pool_.empty()) (void)client_->UnregisterBuffer(pool_.data());
    client_.reset();
    if (staging_ != nullptr) munmap(staging_, staging_size_);
  }

  Status Init() {
    store::ClientOptions co;
    co.config = options_.store;
    // The connector stages through its own registered buffer (below), so
    // the client needs none of its own.
    co.config.local_buffer_size = 0;
    co.tcp_only = options_.tcp_only;
    co.rpc_timeout = options_.load_timeout;
    co.transfer_timeout = options_.load_timeout;
    ASSIGN_OR_RETURN(client_, store::Client::Create(co));
    staging_size_ = options_.store.local_buffer_size;
    if (staging_size_ < block_bytes_ * lineage_.chunk_blocks()) {
      return InvalidArgumentError(fmt::format(
          "mooncake.json: local_buffer_size {} bytes cannot hold one KV chunk of {} tokens "
          "({} bytes for this model); raise local_buffer_size or lower chunk_tokens in "
          "kv_connector_extra_config",
          staging_size_, lineage_.chunk_tokens, block_bytes_ * lineage_.chunk_blocks()));
    }
    void* p = mmap(nullptr, staging_size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
      return ErrnoToStatus(errno, fmt::format("mmap of local_buffer_size {} bytes", staging_size_));
    staging_ = static_cast<std::byte*>(p);
    // Huge pages and populated up front: every chunk moves through here,
    // and first-touch page faults (expensive in VMs) would otherwise land
    // in the first requests' loads.
    ::madvise(staging_, staging_size_, MADV_HUGEPAGE);
    ::madvise(staging_, staging_size_, MADV_POPULATE_WRITE);
    RETURN_IF_ERROR(client_->RegisterBuffer(staging_, staging_size_));
    // A device backend page-locks it: KV blocks then move by DMA straight
    // between its pool and the staging buffer.
    RETURN_IF_ERROR(backend_->RegisterHostBuffer({staging_, staging_size_}));
    host_registered_ = true;
    // A pool in host memory is registered too: chunks are read straight
    // into the request's blocks (scatter reads), with no staging copy.
    if (options_.read_into_pool) pool_ = backend_->HostKvPool();
    if (!pool_.empty()) RETURN_IF_ERROR(client_->RegisterBuffer(pool_.data(), pool_.size()));
    allocator_ = std::make_unique<store::OffsetAllocator>(staging_size_, kStagingAlignment);
    if (options_.role != Role::kConsumer) saver_ = std::thread([this] { SaverLoop(); });
    if (options_.role != Role::kProducer && options_.async_load)
      loader_ = std::thread([this] { LoaderLoop(); });
    spdlog::info("kv connector: role {}, chunks of {} tokens ({} bytes), keys {}*",
                 RoleName(), lineage_.chunk_tokens, block_bytes_ * lineage_.chunk_blocks(),
                 key_prefix_);
    return OkStatus();
  }

  // ---- engine hooks (engine thread) ----

  int MatchTokens(const engine::KvSequenceView& seq, int num_local_tokens) override {
    Tracked& t = Track(seq.request_id);
    t.local_tokens = num_local_tokens;
    t.plan.clear();
    if (options_.role == Role::kProducer) return 0;
    const int block_size = lineage_.block_size;
    const int first = num_local_tokens / block_size;
    // The last prompt token is always computed (its logits give the next).
    const int need_blocks = std::min<int>(static_cast<int>(seq.block_hashes.size()),
                                          (static_cast<int>(seq.tokens.size()) - 1) / block_size);
    if (first >= need_blocks) return 0;
    if (Clock::now() < lookup_skip_until_) return 0;
    std::vector<std::string> keys = LookupKeys(lineage_, seq.block_hashes, first);
    Inc(metrics_.lookups, &stats_.lookups);
    const Clock::time_point lookup_start = Clock::now();
    auto exists = client_->BatchExist(keys);
    spdlog::debug("request {}: store lookup of {} keys in {:.2f} ms", seq.request_id, keys.size(),
                  Seconds(Clock::now() - lookup_start) * 1e3);
    if (!exists.ok()) {
      Inc(metrics_.lookup_failures, &stats_.lookup_failures);
      spdlog::warn("request {}: KV store lookup failed, computing the prompt: {}",
                   seq.request_id, exists.status().ToString());
      lookup_skip_until_ = Clock::now() + kLookupBackoff;
      return 0;
    }
    t.plan = PlanLoad(lineage_, seq.block_hashes, first, need_blocks, *exists);
    if (t.plan.empty()) return 0;
    return (std::min(t.plan.back().end_block, need_blocks) - first) * block_size;
  }

  Status LoadKv(const engine::KvSequenceView& seq, int begin_token, int end_token,
                std::span<const engine::BlockId> blocks) override {
    auto job = PrepareLoad(seq, 0, begin_token, end_token, blocks);
    if (!job.ok()) {
      Inc(metrics_.load_failures, &stats_.load_failures);
      return job.status();
    }
    // Staged blocks are written as each group arrives (engine thread).
    LoadJob& j = **job;
    j.status = RunLoad(j, [&](std::vector<StagedWrite> writes) { WriteStaged(j, writes); });
    j.end = Clock::now();
    return FinishLoad(j);
  }

  engine::KvLoadStart StartLoadKv(const engine::KvSequenceView& seq, engine::KvLoadId id,
                                  int begin_token, int end_token,
                                  std::span<const engine::BlockId> blocks) override {
    // No loader thread (async_load off, or a producer, which never loads).
    if (!loader_.joinable()) return KvConnector::StartLoadKv(seq, id, begin_token, end_token, blocks);
    auto job = PrepareLoad(seq, id, begin_token, end_token, blocks);
    if (!job.ok()) {
      Inc(metrics_.load_failures, &stats_.load_failures);
      return engine::KvLoadStart{false, job.status()};
    }
    loads_.emplace(id, *job);
    {
      std::lock_guard lock(mu_);
      load_queue_.push_back(std::move(*job));
    }
    load_cv_.notify_all();
    return engine::KvLoadStart{true, OkStatus()};
  }

  std::vector<engine::KvLoadDone> PollFinishedLoads() override {
    std::vector<engine::KvLoadDone> done;
    if (loads_.empty()) return done;
    std::vector<std::pair<std::shared_ptr<LoadJob>, std::vector<StagedWrite>>> writes;
    std::vector<std::shared_ptr<LoadJob>> finished;
    {
      std::lock_guard lock(mu_);
      writes.swap(staged_writes_);
      finished.swap(finished_loads_);
    }
    // Writes into the model's KV cache happen here, on the engine thread; a
    // finished load's writes were queued before it finished.
    for (auto& [job, w] : writes) WriteStaged(*job, w);
    for (const auto& job : finished) {
      if (!pool_.empty()) continue;
      job->end = Clock::now();  // its last writes were made just now
    }
    for (const auto& job : finished) {
      loads_.erase(job->id);
      done.push_back({job->id, FinishLoad(*job)});
    }
    return done;
  }

  void CancelLoad(engine::KvLoadId id) override {
    if (auto it = loads_.find(id); it != loads_.end()) it->second->cancelled = true;
  }

  void OnPrefillDone(const engine::KvSequenceView& seq,
                     std::span<const engine::BlockId> blocks) override {
    int reused = 0;
    if (auto it = tracked_.find(std::string(seq.request_id)); it != tracked_.end()) {
      reused = it->second.local_tokens + it->second.loaded_tokens;
      tracked_.erase(it);
    }
    Inc(metrics_.computed_tokens, &stats_.computed_tokens,
        static_cast<uint64_t>(std::max(0, seq.num_prompt_tokens - reused)));
    if (options_.role == Role::kConsumer || blocks.empty()) return;
    Save(seq, blocks);
  }

  bool HoldFinish(std::string_view request_id, std::function<void()> release) override {
    std::lock_guard lock(mu_);
    auto it = pending_.find(std::string(request_id));
    if (it == pending_.end()) return false;
    holders_.push_back({std::string(request_id), Clock::now() + options_.save_timeout,
                        std::move(release)});
    return true;
  }

  Stats stats() const override {
    Stats s;
    s.lookups = stats_.lookups.load();
    s.loaded_tokens = stats_.loaded_tokens.load();
    s.computed_tokens = stats_.computed_tokens.load();
    s.saved_tokens = stats_.saved_tokens.load();
    s.load_bytes = stats_.load_bytes.load();
    s.save_bytes = stats_.save_bytes.load();
    s.lookup_failures = stats_.lookup_failures.load();
    s.load_failures = stats_.load_failures.load();
    s.save_failures = stats_.save_failures.load();
    return s;
  }
  const std::string& key_prefix() const override { return key_prefix_; }

 private:
  struct Tracked {
    int local_tokens = 0;
    int loaded_tokens = 0;
    std::vector<Chunk> plan;  // from MatchTokens, for LoadKv
  };
  struct Slice {
    uint64_t offset = 0;
    uint64_t size = 0;
  };
  // Blocks [begin, begin + count) of a load (indexes into LoadJob::blocks)
  // read into `slice` at `skip` bytes, to be written into the KV cache.
  struct StagedWrite {
    Slice slice;
    uint64_t skip = 0;
    int begin = 0;
    int count = 0;
  };
  // One load: planned on the engine thread, read by the loader thread (or
  // inline for a synchronous load), finished on the engine thread.
  struct LoadJob {
    engine::KvLoadId id = 0;
    std::string request_id;
    std::vector<Chunk> plan;
    int first = 0, last = 0;                 // blocks [first, last) of the sequence
    std::vector<engine::BlockId> blocks;     // theirs, in the KV pool
    Clock::time_point start, deadline;
    Clock::time_point end;                   // the read's (and writes') end
    std::atomic<bool> cancelled{false};      // the sequence went away
    double get_seconds = 0;                  // loader (or inline) only
    Status status;                           // the read's; set before it finishes
    Status write_status;                     // staged writes' (engine thread)
  };
  struct SaveJob {
    std::string request_id;
    std::string key;
    Slice slice;
    int tokens = 0;
    Clock::time_point queued;
  };
  struct Holder {
    std::string request_id;
    Clock::time_point deadline;
    std::function<void()> release;
  };
  struct AtomicStats {
    std::atomic<uint64_t> lookups{0}, loaded_tokens{0}, computed_tokens{0}, saved_tokens{0},
        load_bytes{0}, save_bytes{0}, lookup_failures{0}, load_failures{0}, save_failures{0};
  };

  const char* RoleName() const {
    switch (options_.role) {
      case Role::kProducer: return "kv_producer";
      case Role::kConsumer: return "kv_consumer";
      case Role::kBoth: return "kv_both";
    }
    return "?";
  }

  Tracked& Track(std::string_view request_id) {
    if (tracked_.size() >= kMaxTrackedRequests) tracked_.clear();
    return tracked_[std::string(request_id)];
  }

  // A staging slice of `size` bytes, waiting for the saver to free room
  // until `deadline`.
  StatusOr<Slice> Allocate(uint64_t size, Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    while (true) {
      if (auto off = allocator_->Allocate(size)) return Slice{*off, size};
      if (space_cv_.wait_until(lock, deadline) == std::cv_status::timeout &&
          Clock::now() >= deadline) {
        return ResourceExhaustedError(fmt::format(
            "no room for {} bytes in the {}-byte staging buffer (local_buffer_size) within the "
            "timeout; raise local_buffer_size",
            size, staging_size_));
      }
    }
  }
  void Free(const Slice& slice) {
    {
      std::lock_guard lock(mu_);
      allocator_->Free(slice.offset, slice.size);
    }
    space_cv_.notify_all();
  }
  std::byte* At(const Slice& slice) const { return staging_ + slice.offset; }

  // Where the blocks of `chunk` go, in order: the request's pool blocks for
  // [from, to) (merged where adjacent), staging for the rest; or, with no
  // host pool, all of it into `slice`.
  std::vector<store::MutableBuffer> Pieces(const Chunk& chunk, int from, int to,
                                           std::span<const engine::BlockId> pool_blocks,
                                           const Slice& slice) const {
    std::vector<store::MutableBuffer> out;
    if (pool_.empty()) {
      out.push_back({At(slice), slice.size});
      return out;
    }
    std::byte* staged = slice.size > 0 ? At(slice) : nullptr;
    bool last_in_pool = false;
    // Adjacent blocks of one region become one piece (one transfer).
    auto add = [&](std::byte* p, bool in_pool) {
      if (!out.empty() && last_in_pool == in_pool &&
          static_cast<std::byte*>(out.back().data) + out.back().capacity == p) {
        out.back().capacity += block_bytes_;
      } else {
        out.push_back({p, block_bytes_});
      }
      last_in_pool = in_pool;
    };
    for (int b = chunk.begin_block; b < chunk.end_block; ++b) {
      if (b >= from && b < to) {
        add(pool_.data() + static_cast<size_t>(pool_blocks[b - from]) * block_bytes_, true);
      } else {
        add(staged, false);
        staged += block_bytes_;
      }
    }
    return out;
  }

  // Takes the plan MatchTokens made for `seq` and checks the range.
  StatusOr<std::shared_ptr<LoadJob>> PrepareLoad(const engine::KvSequenceView& seq,
                                                 engine::KvLoadId id, int begin_token,
                                                 int end_token,
                                                 std::span<const engine::BlockId> blocks) {
    const int block_size = lineage_.block_size;
    auto it = tracked_.find(std::string(seq.request_id));
    if (it == tracked_.end() || it->second.plan.empty())
      return FailedPreconditionError("LoadKv without a matching lookup");
    auto job = std::make_shared<LoadJob>();
    job->id = id;
    job->request_id = std::string(seq.request_id);
    job->plan = std::move(it->second.plan);
    job->first = begin_token / block_size;
    job->last = end_token / block_size;
    const std::vector<Chunk>& plan = job->plan;
    if (job->first < plan.front().begin_block || job->last > plan.back().end_block ||
        job->last <= job->first || static_cast<int>(blocks.size()) != job->last - job->first)
      return FailedPreconditionError(fmt::format(
          "LoadKv of blocks [{}, {}) ({} given) is outside the planned [{}, {})", job->first,
          job->last, blocks.size(), plan.front().begin_block, plan.back().end_block));
    job->blocks.assign(blocks.begin(), blocks.end());
    job->start = Clock::now();
    job->deadline = job->start + options_.load_timeout;
    return job;
  }

  // Reads the job's chunks: straight into the pool's blocks, or into staging
  // slices handed to `deliver` (which frees them after writing them).
  Status RunLoad(LoadJob& job, const std::function<void(std::vector<StagedWrite>)>& deliver) {
    const std::vector<Chunk>& plan = job.plan;
    const int first = job.first;
    const int last = job.last;
    const std::span<const engine::BlockId> blocks(job.blocks);
    size_t next = 0;
    while (next < plan.size() && plan[next].begin_block < last) {
      if (job.cancelled) return CancelledError("the request went away during its KV load");
      // A group of chunks whose staging fits the buffer at once. Reading
      // into the pool, only the blocks of a chunk outside [first, last)
      // need staging (they are read and dropped).
      std::vector<Slice> slices;
      std::vector<std::string> keys;
      std::vector<std::vector<store::MutableBuffer>> pieces;
      size_t end = next;
      uint64_t group_bytes = 0;
      while (end < plan.size() && plan[end].begin_block < last) {
        const Chunk& chunk = plan[end];
        const int from = std::max(chunk.begin_block, first);
        const int to = std::min(chunk.end_block, last);
        const uint64_t staged_blocks =
            pool_.empty() ? chunk.num_blocks() : chunk.num_blocks() - (to - from);
        const uint64_t bytes = staged_blocks * block_bytes_;
        if (!slices.empty() && group_bytes + bytes > staging_size_ / 2) break;
        Slice slice{0, 0};
        if (bytes > 0) {
          auto allocated = Allocate(bytes, job.deadline);
          if (!allocated.ok()) {
            for (const Slice& s : slices)
              if (s.size > 0) Free(s);
            return allocated.status();
          }
          slice = *allocated;
        }
        slices.push_back(slice);
        keys.push_back(chunk.key);
        pieces.push_back(Pieces(chunk, from, to, blocks.subspan(from - first, to - from), slice));
        group_bytes += bytes;
        ++end;
      }
      const Clock::time_point get_start = Clock::now();
      auto got = client_->BatchGetIntoScatter(keys, pieces);
      job.get_seconds += Seconds(Clock::now() - get_start);
      Status status = OkStatus();
      std::vector<StagedWrite> writes;
      for (size_t i = 0; i < keys.size(); ++i) {
        const Chunk& chunk = plan[next + i];
        if (status.ok() && !got[i].ok()) {
          status = Status(got[i].status().code(),
                          fmt::format("chunk {}: {}", keys[i], got[i].status().message()));
        }
        if (status.ok()) Inc(metrics_.load_bytes, &stats_.load_bytes, *got[i]);
        if (!status.ok() || !pool_.empty()) {  // in place already, or dropped
          if (slices[i].size > 0) Free(slices[i]);
          continue;
        }
        const int from = std::max(chunk.begin_block, first);
        const int to = std::min(chunk.end_block, last);
        writes.push_back({slices[i], static_cast<uint64_t>(from - chunk.begin_block) * block_bytes_,
                          from - first, to - from});
      }
      if (!status.ok()) {
        for (const StagedWrite& w : writes) Free(w.slice);
        return status;
      }
      if (!writes.empty()) deliver(std::move(writes));
      next = end;
    }
    return OkStatus();
  }

  // Writes staged blocks into the model's KV cache and frees their slices.
  // Engine thread only.
  void WriteStaged(LoadJob& job, const std::vector<StagedWrite>& writes) {
    for (const StagedWrite& w : writes) {
      if (job.write_status.ok() && !job.cancelled) {
        auto bytes = std::span<const std::byte>(At(w.slice), w.slice.size)
                         .subspan(w.skip, static_cast<size_t>(w.count) * block_bytes_);
        job.write_status = backend_->WriteKvBlocks(
            std::span<const engine::BlockId>(job.blocks).subspan(w.begin, w.count), bytes);
      }
      Free(w.slice);
    }
  }

  // The load's outcome, counted. Engine thread only.
  Status FinishLoad(LoadJob& job) {
    Status s = job.status.ok() ? job.write_status : job.status;
    if (s.ok() && job.cancelled) s = CancelledError("the request went away during its KV load");
    if (!s.ok()) {
      // A cancelled load is no store failure.
      if (s.code() != StatusCode::kCancelled) Inc(metrics_.load_failures, &stats_.load_failures);
      return s;
    }
    const int block_size = lineage_.block_size;
    const int tokens = (job.last - job.first) * block_size;
    Track(job.request_id).loaded_tokens = tokens;
    Inc(metrics_.loaded_tokens, &stats_.loaded_tokens, static_cast<uint64_t>(tokens));
    // From the scheduler's start (queueing behind other loads included) to
    // the blocks holding the KV; not the wait for the engine's next poll.
    const double seconds = Seconds(job.end - job.start);
    if (metrics_.load_seconds) metrics_.load_seconds->Observe(seconds);
    spdlog::debug("request {}: loaded tokens [{}, {}) from the store in {:.1f} ms (get {:.1f} ms)",
                  job.request_id, job.first * block_size, job.last * block_size, seconds * 1e3,
                  job.get_seconds * 1e3);
    return OkStatus();
  }

  // The loader thread: runs asynchronous loads one after another; staged
  // blocks go to the engine thread (PollFinishedLoads) to be written.
  void LoaderLoop() {
    while (true) {
      std::shared_ptr<LoadJob> job;
      {
        std::unique_lock lock(mu_);
        load_cv_.wait(lock, [&] { return stopping_ || !load_queue_.empty(); });
        if (load_queue_.empty()) return;  // stopping
        job = std::move(load_queue_.front());
        load_queue_.pop_front();
      }
      Status status = RunLoad(*job, [&](std::vector<StagedWrite> writes) {
        std::lock_guard lock(mu_);
        staged_writes_.emplace_back(job, std::move(writes));
      });
      std::lock_guard lock(mu_);
      job->status = std::move(status);
      job->end = Clock::now();
      finished_loads_.push_back(std::move(job));
    }
  }

  void Save(const engine::KvSequenceView& seq, std::span<const engine::BlockId> blocks) {
    std::vector<Chunk> chunks = ChunksOfPrompt(lineage_, seq.block_hashes.first(blocks.size()));
    std::vector<std::string> keys;
    for (const Chunk& c : chunks) keys.push_back(c.key);
    // Chunks already in the store (a shared prefix, or loaded from there)
    // are not copied again.
    auto exists = client_->BatchExist(keys);
    if (!exists.ok()) {
      Inc(metrics_.save_failures, &stats_.save_failures);
      spdlog::warn("request {}: not saving its KV: store lookup failed: {}", seq.request_id,
                   exists.status().ToString());
      return;
    }
    const Clock::time_point now = Clock::now();
    const Clock::time_point deadline = now + options_.save_timeout;
    for (size_t i = 0; i < chunks.size(); ++i) {
      if ((*exists)[i]) continue;
      const Chunk& c = chunks[i];
      const uint64_t bytes = static_cast<uint64_t>(c.num_blocks()) * block_bytes_;
      auto slice = Allocate(bytes, deadline);
      if (!slice.ok()) {
        Inc(metrics_.save_failures, &stats_.save_failures);
        spdlog::warn("request {}: KV of blocks [{}, {}) not saved: {}", seq.request_id,
                     c.begin_block, blocks.size(), slice.status().ToString());
        break;
      }
      Status s = backend_->ReadKvBlocks(blocks.subspan(c.begin_block, c.num_blocks()),
                                        std::span<std::byte>(At(*slice), bytes));
      if (!s.ok()) {
        Free(*slice);
        Inc(metrics_.save_failures, &stats_.save_failures);
        spdlog::warn("request {}: reading KV blocks failed: {}", seq.request_id, s.ToString());
        break;
      }
      // Handed to the saver at once: a prompt larger than the staging
      // buffer waits above for the room its earlier chunks free as they
      // are stored.
      {
        std::lock_guard lock(mu_);
        ++pending_[std::string(seq.request_id)];
        jobs_.push_back({std::string(seq.request_id), c.key, *slice,
                         c.num_blocks() * lineage_.block_size, now});
      }
      work_cv_.notify_all();
    }
  }

  void SaverLoop() {
    while (true) {
      std::deque<SaveJob> batch;
      {
        std::unique_lock lock(mu_);
        work_cv_.wait_for(lock, std::chrono::milliseconds(100),
                          [&] { return stopping_ || !jobs_.empty(); });
        if (stopping_ && jobs_.empty()) return;
        batch.swap(jobs_);
      }
      ReleaseHolders(/*all=*/false);
      if (batch.empty()) continue;
      std::vector<std::string> keys;
      std::vector<store::ConstBuffer> values;
      for (const SaveJob& j : batch) {
        keys.push_back(j.key);
        values.push_back({At(j.slice), j.slice.size});
      }
      std::vector<Status> put = client_->BatchPutFrom(keys, values);
      std::map<std::string, int> done;
      for (size_t i = 0; i < batch.size(); ++i) {
        const SaveJob& j = batch[i];
        if (put[i].ok() || put[i].code() == StatusCode::kAlreadyExists) {
          Inc(metrics_.saved_tokens, &stats_.saved_tokens, static_cast<uint64_t>(j.tokens));
          Inc(metrics_.save_bytes, &stats_.save_bytes, j.slice.size);
          if (metrics_.save_seconds) metrics_.save_seconds->Observe(Seconds(Clock::now() - j.queued));
        } else {
          Inc(metrics_.save_failures, &stats_.save_failures);
          spdlog::warn("request {}: KV chunk {} not saved: {}", j.request_id, j.key,
                       put[i].ToString());
        }
        Free(j.slice);
        ++done[j.request_id];
      }
      {
        std::lock_guard lock(mu_);
        for (const auto& [id, n] : done) {
          auto it = pending_.find(id);
          if (it != pending_.end() && (it->second -= n) <= 0) pending_.erase(it);
        }
      }
      ReleaseHolders(/*all=*/false);
    }
  }

  // Releases held responses whose saves are done or whose wait is over.
  void ReleaseHolders(bool all) {
    std::vector<std::function<void()>> release;
    {
      std::lock_guard lock(mu_);
      const Clock::time_point now = Clock::now();
      for (auto it = holders_.begin(); it != holders_.end();) {
        const bool saved = !pending_.count(it->request_id);
        if (all || saved || now >= it->deadline) {
          if (!saved && !all)
            spdlog::warn("request {}: its KV is still being saved after {} ms; answering anyway",
                         it->request_id, options_.save_timeout.count());
          release.push_back(std::move(it->release));
          it = holders_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& r : release) r();
  }

  const StoreConnectorOptions options_;
  model::Backend* const backend_;
  const uint64_t block_bytes_;
  KvLineage lineage_;
  std::string key_prefix_;
  Metrics metrics_;
  AtomicStats stats_;
  std::unique_ptr<store::Client> client_;
  std::byte* staging_ = nullptr;
  uint64_t staging_size_ = 0;
  std::span<std::byte> pool_;  // the backend's KV pool when in host memory
  bool host_registered_ = false;  // staging page-locked by the backend

  // Engine thread only.
  std::map<std::string, Tracked> tracked_;
  std::map<engine::KvLoadId, std::shared_ptr<LoadJob>> loads_;  // started, not yet reported
  Clock::time_point lookup_skip_until_{};

  std::mutex mu_;
  std::condition_variable work_cv_;   // jobs_ or stopping_
  std::condition_variable space_cv_;  // staging freed
  // Guarded by mu_.
  std::unique_ptr<store::OffsetAllocator> allocator_;
  std::deque<SaveJob> jobs_;
  std::map<std::string, int> pending_;  // request id -> chunks not yet stored
  std::vector<Holder> holders_;
  std::deque<std::shared_ptr<LoadJob>> load_queue_;  // for the loader
  std::vector<std::pair<std::shared_ptr<LoadJob>, std::vector<StagedWrite>>> staged_writes_;
  std::vector<std::shared_ptr<LoadJob>> finished_loads_;
  bool stopping_ = false;
  std::condition_variable load_cv_;  // load_queue_ or stopping_
  std::thread saver_;
  std::thread loader_;
};

}  // namespace

Status ApplyExtraConfig(const nlohmann::json& extra, StoreConnectorOptions* options) {
  constexpr const char* kKnown =
      "chunk_tokens, tcp_only, load_timeout_ms, save_timeout_ms, async_load";
  if (!extra.is_object())
    return InvalidArgumentError("kv_connector_extra_config must be an object");
  for (const auto& [name, value] : extra.items()) {
    auto positive = [&](int64_t* out) -> Status {
      if (!value.is_number_integer() || value.get<int64_t>() <= 0)
        return InvalidArgumentError(fmt::format(
            "kv_connector_extra_config.{} must be a positive integer, got {}", name,
            value.dump()));
      *out = value.get<int64_t>();
      return OkStatus();
    };
    int64_t v = 0;
    if (name == "chunk_tokens") {
      RETURN_IF_ERROR(positive(&v));
      options->chunk_tokens = static_cast<int>(v);
    } else if (name == "load_timeout_ms") {
      RETURN_IF_ERROR(positive(&v));
      options->load_timeout = std::chrono::milliseconds(v);
    } else if (name == "save_timeout_ms") {
      RETURN_IF_ERROR(positive(&v));
      options->save_timeout = std::chrono::milliseconds(v);
    } else if (name == "tcp_only") {
      if (!value.is_boolean())
        return InvalidArgumentError(fmt::format(
            "kv_connector_extra_config.tcp_only must be true or false, got {}", value.dump()));
      options->tcp_only = value.get<bool>();
    } else if (name == "async_load") {
      if (!value.is_boolean())
        return InvalidArgumentError(fmt::format(
            "kv_connector_extra_config.async_load must be true or false, got {}", value.dump()));
      options->async_load = value.get<bool>();
    } else {
      return InvalidArgumentError(fmt::format(
          "kv_connector_extra_config.{} is not a MooncakeStoreConnector setting (known: {})",
          name, kKnown));
    }
  }
  return OkStatus();
}

StatusOr<std::unique_ptr<StoreConnector>> StoreConnector::Create(
    const StoreConnectorOptions& options, model::Backend* backend) {
  if (backend == nullptr) return InvalidArgumentError("StoreConnector::Create: no backend");
  const int block_size = backend->kv_layout().block_size;
  if (options.chunk_tokens <= 0 || options.chunk_tokens % block_size != 0) {
    return InvalidArgumentError(fmt::format(
        "kv_connector_extra_config.chunk_tokens {} must be a positive multiple of the KV block "
        "size {} (--block-size)",
        options.chunk_tokens, block_size));
  }
  auto connector = std::make_unique<StoreConnectorImpl>(options, backend);
  RETURN_IF_ERROR(connector->Init());
  return std::unique_ptr<StoreConnector>(std::move(connector));
}

}  // namespace crescent::kvconnector
