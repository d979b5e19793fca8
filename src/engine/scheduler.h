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
// When a running sequence needs a block and none is free, the newest running
// sequence not yet scheduled in this step is preempted by recompute: its
// blocks are freed (their cached KV stays reusable) and it goes back to the
// front of the waiting queue with its output so far, to be recomputed when it
// is readmitted. No waiting sequence is admitted in a step that preempted.
//
// Thread safety: none; owned by EngineCore on the engine thread.
#pragma once

#include <deque>
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

  // Queues a new sequence at the back of the waiting queue.
  void Add(Sequence* seq);
  // Removes a sequence wherever it is and frees its blocks (abort, finish).
  void Remove(Sequence* seq);

  SchedulerOutput Schedule();
  // After the model computed `out`: advances num_computed_tokens and
  // registers newly full blocks in the prefix cache. Sampling is the
  // caller's; it then calls Remove for sequences that finished.
  void OnStepComputed(const SchedulerOutput& out);
  // Reports prompts whose prefill just completed to the KV connector.
  void ReportPrefillDone(Sequence* seq);

  int num_waiting() const { return static_cast<int>(waiting_.size()); }
  int num_running() const { return static_cast<int>(running_.size()); }
  const SchedulerStats& stats() const { return stats_; }

 private:
  bool ScheduleRunning(Sequence* seq, int num_tokens, SchedulerOutput* out,
                       int* budget);
  void Preempt(Sequence* seq, SchedulerOutput* out);
  // Admits the front of the waiting queue; false when it cannot start now.
  bool AdmitWaiting(Sequence* seq, SchedulerOutput* out, int* budget);
  KvSequenceView View(const Sequence& seq) const;

  const SchedulerOptions options_;
  BlockManager* const blocks_;
  KvConnector* const connector_;
  const int block_size_;

  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // admission order, oldest first
  SchedulerStats stats_;
};

}  // namespace crescent::engine
