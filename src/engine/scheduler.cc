#include "engine/scheduler.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <thread>

#include "common/logging.h"

namespace crescent::engine {

Scheduler::Scheduler(const SchedulerOptions& options, BlockManager* blocks,
                     KvConnector* connector)
    : options_(options), blocks_(blocks), connector_(connector),
      block_size_(blocks->block_size()) {}

Scheduler::~Scheduler() { AbandonLoads(); }

void Scheduler::AbandonLoads() {
  for (auto& [id, load] : loading_) {
    if (load.seq == nullptr) continue;
    load.orphan = std::move(load.seq->blocks);
    load.seq->blocks = BlockTable{};
    load.seq->kv_load_id = 0;
    load.seq = nullptr;
    connector_->CancelLoad(id);
  }
  using Clock = std::chrono::steady_clock;
  auto warn_at = Clock::now() + std::chrono::seconds(5);
  while (!loading_.empty()) {
    FinishLoads();
    if (loading_.empty()) break;
    // The connector bounds its loads (kv_connector.h); say so if it does not.
    if (Clock::now() >= warn_at) {
      spdlog::warn("waiting for {} KV connector loads to end", loading_.size());
      warn_at = Clock::now() + std::chrono::seconds(5);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void Scheduler::Add(Sequence* seq) {
  seq->status = SeqStatus::kWaiting;
  waiting_.push_back(seq);
}

void Scheduler::Remove(Sequence* seq) {
  if (seq->status == SeqStatus::kWaiting) {
    waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), seq), waiting_.end());
  } else if (seq->status == SeqStatus::kRunning) {
    running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  } else if (seq->status == SeqStatus::kLoadingKv) {
    // The load may be writing the blocks: they are freed when it ends.
    Load& load = loading_.at(seq->kv_load_id);
    load.seq = nullptr;
    load.orphan = std::move(seq->blocks);
    seq->blocks = BlockTable{};
    connector_->CancelLoad(seq->kv_load_id);
    seq->kv_load_id = 0;
  }
  blocks_->Free(&seq->blocks);
  seq->status = SeqStatus::kFinished;
}

KvSequenceView Scheduler::View(const Sequence& seq) const {
  return KvSequenceView{seq.request_id, seq.tokens, seq.num_prompt_tokens,
                        seq.block_hashes};
}

void Scheduler::Preempt(Sequence* seq, SchedulerOutput* out) {
  running_.erase(std::remove(running_.begin(), running_.end(), seq), running_.end());
  blocks_->Free(&seq->blocks);
  seq->num_computed_tokens = 0;
  seq->status = SeqStatus::kWaiting;
  ++seq->num_preemptions;
  ++stats_.num_preemptions;
  waiting_.push_front(seq);
  out->preempted.push_back(seq);
}

bool Scheduler::ScheduleRunning(Sequence* seq, int num_tokens,
                                SchedulerOutput* out, int* budget) {
  while (!blocks_->Allocate(&seq->blocks, seq->num_computed_tokens + num_tokens)) {
    // Out of blocks: preempt the newest running sequence that this step has
    // not scheduled yet, possibly `seq` itself.
    Sequence* victim = seq;
    for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
      if (*it != seq && !(*it)->scheduled_this_step) {
        victim = *it;
        break;
      }
    }
    Preempt(victim, out);
    if (victim == seq) return false;
  }
  seq->scheduled_this_step = true;
  out->seqs.push_back({seq, num_tokens});
  out->num_tokens += num_tokens;
  *budget -= num_tokens;
  return true;
}

bool Scheduler::AdmitWaiting(Sequence* seq, SchedulerOutput* out, int* budget) {
  const int total = static_cast<int>(seq->tokens.size());
  ExtendBlockHashes(seq->tokens, block_size_, options_.hash_seed, &seq->block_hashes);
  // At least the last token is computed: its logits give the next token.
  const int max_hit_blocks = (total - 1) / block_size_;
  std::vector<BlockId> cached = blocks_->FindCachedPrefix(
      std::span<const BlockHash>(seq->block_hashes)
          .first(std::min<size_t>(max_hit_blocks, seq->block_hashes.size())));
  const int local_tokens = static_cast<int>(cached.size()) * block_size_;
  int external_tokens = 0;
  if (connector_ != nullptr) {
    external_tokens = connector_->MatchTokens(View(*seq), local_tokens);
    external_tokens -= external_tokens % block_size_;
    external_tokens = std::clamp(external_tokens, 0, max_hit_blocks * block_size_ - local_tokens);
  }
  int computed = local_tokens + external_tokens;
  int num_tokens = total - computed;
  if (num_tokens > *budget) {
    if (!options_.enable_chunked_prefill) return false;
    num_tokens = *budget;
  }
  if (!blocks_->Allocate(&seq->blocks, computed + num_tokens, cached)) return false;
  blocks_->RecordLookup(seq->num_prompt_tokens, std::min(local_tokens, seq->num_prompt_tokens));
  if (external_tokens > 0) {
    auto ids = std::span<const BlockId>(seq->blocks.blocks)
                   .subspan(local_tokens / block_size_, external_tokens / block_size_);
    const KvLoadId load_id = next_load_id_++;
    KvLoadStart started = connector_->StartLoadKv(View(*seq), load_id, local_tokens, computed, ids);
    if (started.async) {
      // Holds its blocks, computes nothing until the load ends (FinishLoads).
      loading_.emplace(load_id, Load{seq, BlockTable{}, local_tokens, computed});
      seq->kv_load_id = load_id;
      waiting_.pop_front();
      seq->status = SeqStatus::kLoadingKv;
      return true;
    }
    const Status& s = started.status;
    if (s.ok()) {
      stats_.connector_loaded_tokens += external_tokens;
    } else {
      spdlog::warn("request {}: KV load of tokens [{}, {}) failed, computing them: {}",
                   seq->request_id, local_tokens, computed, s.ToString());
      ++stats_.connector_failed_loads;
      computed = local_tokens;
      // The blocks allocated above cover this too (see the budget cases).
      num_tokens = std::min(total - computed, *budget);
    }
  }
  if (seq->num_cached_tokens < 0) seq->num_cached_tokens = std::min(computed, seq->num_prompt_tokens);
  seq->num_computed_tokens = computed;
  // Loaded blocks hold computed KV: make them shareable at once.
  blocks_->CacheFullBlocks(&seq->blocks, seq->block_hashes, computed / block_size_);
  waiting_.pop_front();
  seq->status = SeqStatus::kRunning;
  running_.push_back(seq);
  seq->scheduled_this_step = true;
  out->seqs.push_back({seq, num_tokens});
  out->num_tokens += num_tokens;
  *budget -= num_tokens;
  return true;
}

void Scheduler::FinishLoads() {
  if (connector_ == nullptr || loading_.empty()) return;
  for (const KvLoadDone& done : connector_->PollFinishedLoads()) {
    auto it = loading_.find(done.id);
    if (it == loading_.end()) {
      spdlog::error("the KV connector reported load {}, which is not in flight", done.id);
      continue;
    }
    Load load = std::move(it->second);
    loading_.erase(it);
    Sequence* seq = load.seq;
    if (seq == nullptr) {  // removed while loading
      blocks_->Free(&load.orphan);
      continue;
    }
    int computed = load.end_token;
    if (done.status.ok()) {
      stats_.connector_loaded_tokens += load.end_token - load.local_tokens;
    } else {
      spdlog::warn("request {}: KV load of tokens [{}, {}) failed, computing them: {}",
                   seq->request_id, load.local_tokens, load.end_token, done.status.ToString());
      ++stats_.connector_failed_loads;
      computed = load.local_tokens;
    }
    if (seq->num_cached_tokens < 0) seq->num_cached_tokens = std::min(computed, seq->num_prompt_tokens);
    seq->num_computed_tokens = computed;
    blocks_->CacheFullBlocks(&seq->blocks, seq->block_hashes, computed / block_size_);
    seq->kv_load_id = 0;
    seq->status = SeqStatus::kRunning;
    running_.push_back(seq);
  }
}

SchedulerOutput Scheduler::Schedule() {
  FinishLoads();
  SchedulerOutput out;
  int budget = options_.max_num_batched_tokens;
  for (Sequence* seq : running_) seq->scheduled_this_step = false;
  for (Sequence* seq : waiting_) seq->scheduled_this_step = false;

  // Decodes first so that a long prefill never stalls running generations,
  // then continuing prefills. Snapshot: preemption edits running_.
  std::vector<Sequence*> order;
  order.reserve(running_.size());
  for (Sequence* seq : running_)
    if (seq->tokens.size() - seq->num_computed_tokens == 1) order.push_back(seq);
  for (Sequence* seq : running_)
    if (seq->tokens.size() - seq->num_computed_tokens > 1) order.push_back(seq);
  for (Sequence* seq : order) {
    if (budget <= 0) break;
    if (seq->status != SeqStatus::kRunning) continue;  // preempted meanwhile
    const int remaining = static_cast<int>(seq->tokens.size()) - seq->num_computed_tokens;
    assert(remaining >= 1);
    ScheduleRunning(seq, std::min(remaining, budget), &out, &budget);
  }

  if (!out.preempted.empty()) return out;
  while (!waiting_.empty() && budget > 0 &&
         static_cast<int>(running_.size() + loading_.size()) < options_.max_num_seqs) {
    if (!AdmitWaiting(waiting_.front(), &out, &budget)) break;
  }
  return out;
}

void Scheduler::OnStepComputed(const SchedulerOutput& out) {
  for (const ScheduledSeq& s : out.seqs) {
    Sequence* seq = s.seq;
    seq->num_computed_tokens += s.num_tokens;
    ExtendBlockHashes(seq->tokens, block_size_, options_.hash_seed, &seq->block_hashes);
    blocks_->CacheFullBlocks(&seq->blocks, seq->block_hashes,
                             seq->num_computed_tokens / block_size_);
  }
}

void Scheduler::ReportPrefillDone(Sequence* seq) {
  if (connector_ == nullptr || seq->prefill_reported) return;
  if (seq->num_computed_tokens < seq->num_prompt_tokens) return;
  seq->prefill_reported = true;
  const int full = seq->num_prompt_tokens / block_size_;
  KvSequenceView view = View(*seq);
  view.tokens = seq->prompt();
  view.block_hashes = std::span<const BlockHash>(seq->block_hashes).first(full);
  connector_->OnPrefillDone(view, std::span<const BlockId>(seq->blocks.blocks).first(full));
}

}  // namespace crescent::engine
