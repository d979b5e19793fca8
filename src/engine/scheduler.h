// Continuous-batching scheduler with chunked prefill and preemption.
//
// Each step the scheduler picks, under a token budget
// (max_num_batched_tokens), how many new tokens of which sequences the model
// computes:
//  1. running sequences in decode (one token each), oldest first;
//  2. running sequences in the middle of a chunked prefill, oldest first,
//     each taking as much of the remaining budget as it needs;
//  3. waiting sequences, oldest first, while the budget, max_num_seqs and
//     free blocks allow: each looks up its prompt in the prefix cache, asks
//     the KV connector (if any) for more, and starts computing the rest,
//     chunked to the budget. New requests thus join a running batch.
// A sequence whose connector load runs asynchronously (kv_connector.h) is
// admitted with its blocks but computes nothing and takes no budget until
// the load ends (kLoadingKv; it counts against max_num_seqs); the waiting
// sequences behind it are admitted meanwhile. Each step first collects the
// loads that ended: those sequences join the running ones (last), with the
// loaded tokens computed, or, when the load failed, none of them.
// When a running sequence needs a block and none is free, the newest running
// sequence not yet scheduled in this step is preempted by recompute: its
// blocks are freed (their cached KV stays reusable) and it goes back to the
// front of the waiting queue with its output so far, to be recomputed when it
// is readmitted. No waiting sequence is admitted in a step that preempted.
//
// Thread safety: none; owned by EngineCore on the engine thread.
#pragma once

#include <deque>
#include <map>
#include <vector>

#include "engine/block_manager.h"
#include "engine/kv_connector.h"
#include "engine/sequence.h"

namespace crescent::engine {

struct SchedulerOptions {
  int max_num_seqs = 256;              // running sequences at most
  int max_num_batched_tokens = 2048;   // tokens computed per step at most
  bool enable_chunked_prefill = true;  // off: a prompt must fit one step
  uint64_t hash_seed = 0;              // HashSeedFromFingerprint(model)
};

struct ScheduledSeq {
  Sequence* seq = nullptr;
  int num_tokens = 0;  // tokens[num_computed_tokens, + num_tokens) this step
};

struct SchedulerOutput {
  std::vector<ScheduledSeq> seqs;
  int num_tokens = 0;
  std::vector<Sequence*> preempted;  // in this step
  bool empty() const { return seqs.empty(); }
};

struct SchedulerStats {
  uint64_t num_preemptions = 0;
  uint64_t connector_loaded_tokens = 0;   // prompt tokens the connector supplied
  uint64_t connector_failed_loads = 0;
};

class Scheduler {
 public:
  // `blocks` and `connector` (may be null) outlive the scheduler.
  Scheduler(const SchedulerOptions& options, BlockManager* blocks,
            KvConnector* connector);
  // Waits for loads still in flight (AbandonLoads) without touching their
  // sequences.
  ~Scheduler();

  // Queues a new sequence at the back of the waiting queue.
  void Add(Sequence* seq);
  // Removes a sequence wherever it is and frees its blocks (abort, finish).
  // A sequence whose load is in flight gives its blocks to the scheduler,
  // which cancels the load and frees them once the connector reports it:
  // the sequence itself may be destroyed right after this returns.
  void Remove(Sequence* seq);
  // Detaches every sequence still loading (as Remove would, but leaving
  // them kLoadingKv) and waits until the connector reported their loads,
  // freeing the blocks. For shutdown, while the sequences still exist.
  void AbandonLoads();

  SchedulerOutput Schedule();
  // After the model computed `out`: advances num_computed_tokens and
  // registers newly full blocks in the prefix cache. Sampling is the
  // caller's; it then calls Remove for sequences that finished.
  void OnStepComputed(const SchedulerOutput& out);
  // Reports prompts whose prefill just completed to the KV connector.
  void ReportPrefillDone(Sequence* seq);

  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  // Connector loads in flight, including those of removed sequences.
  int num_loading() const { return static_cast<int>(loading_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  const SchedulerStats& stats() const { return stats_; }

 private:
  bool ScheduleRunning(Sequence* seq, int num_tokens, SchedulerOutput* out,
                       int* budget);
  void Preempt(Sequence* seq, SchedulerOutput* out);
  // Admits the front of the waiting queue; false when it cannot start now.
  bool AdmitWaiting(Sequence* seq, SchedulerOutput* out, int* budget);
  KvSequenceView View(const Sequence& seq) const;
  // Collects the connector's finished loads (start of every step).
  void FinishLoads();

  struct Load {
    Sequence* seq = nullptr;  // null once removed: then `orphan` holds its blocks
    BlockTable orphan;
    int local_tokens = 0;     // the load covers tokens [local_tokens, end_token)
    int end_token = 0;
  };

  const SchedulerOptions options_;
  BlockManager* const blocks_;
  KvConnector* const connector_;
  const int block_size_;

  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // admission order, oldest first
  std::map<KvLoadId, Load> loading_;
  KvLoadId next_load_id_ = 1;
  SchedulerStats stats_;
};

}  // namespace crescent::engine
