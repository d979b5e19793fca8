// Hooks for a KV connector (the disaggregated prefill/decode path): KV that
// lives outside this instance can be loaded into a new sequence's blocks
// instead of computed, and a finished prefill's full blocks can be saved.
//
// The scheduler calls these on the engine thread:
//  1. When it admits a sequence: after the local prefix-cache lookup found
//     `num_local_tokens` (a multiple of the block size), MatchTokens asks
//     how many further leading tokens the connector can supply.
//  2. After allocating blocks for them: StartLoadKv starts writing their KV
//     into the given blocks. A connector that does not opt in to
//     asynchronous loads keeps the default, which calls LoadKv and returns
//     its outcome (the step that admits the sequence waits for it). One that
//     opts in returns `async`: the sequence then holds its blocks without
//     being scheduled while other sequences keep running, and the engine
//     calls PollFinishedLoads at the start of every scheduling step to learn
//     which loads ended. On error (either way) the engine computes those
//     tokens itself: same output, only slower.
//  3. When the sequence's whole prompt has been computed (before its first
//     output token is delivered to the client): OnPrefillDone with the
//     prompt's full blocks and their chained hashes. The blocks stay
//     unchanged only until the call returns: a saver copies (or finishes
//     writing) what it needs before returning.
//  4. When a request's last output is ready (Engine, not EngineCore):
//     HoldFinish may hold it back until the request's KV has reached its
//     destination, so that a client (the proxy) that saw the response
//     complete can count on the KV being there.
//
// Thread safety: every hook is called only from the engine thread;
// implementations need no locking against the engine.
//
// Asynchronous loads, ownership: from StartLoadKv returning `async` until
// PollFinishedLoads reports that load id, the blocks passed in belong to the
// load. The engine neither reads nor writes them (the sequence is not
// scheduled, the blocks are not in the prefix cache) nor frees them: a
// sequence aborted meanwhile keeps its blocks allocated, the engine calls
// CancelLoad and frees them once the load is reported (a connector must thus
// report every started load, cancelled or not, within a bounded time, e.g.
// its load timeout). A connector may write them from its own threads only
// where that is safe beside forward passes over other blocks (a pool in host
// memory); writes through the model (Backend::WriteKvBlocks) belong on the
// engine thread, e.g. inside PollFinishedLoads. The views passed to
// StartLoadKv (KvSequenceView, `blocks`) are valid only during the call:
// copy what the load needs. An engine being destroyed cancels its loads and
// waits until they are reported, so the connector must outlive it.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "engine/block_hash.h"
#include "engine/block_manager.h"

namespace crescent::engine {

// What a connector sees of a sequence.
struct KvSequenceView {
  std::string_view request_id;
  std::span<const int32_t> tokens;  // prompt (and, after a preemption, output)
  int num_prompt_tokens = 0;
  std::span<const BlockHash> block_hashes;  // of every full block of tokens
};

// An asynchronous load, named by the engine (unique per engine).
using KvLoadId = uint64_t;

// What StartLoadKv did.
struct KvLoadStart {
  bool async = false;  // true: running; PollFinishedLoads reports its end
  Status status;       // !async: the load's outcome
};

// A load started with `async` that ended (successfully, failed or cancelled).
struct KvLoadDone {
  KvLoadId id = 0;
  Status status;  // ok: the blocks hold the KV of the requested tokens
};

class KvConnector {
 public:
  virtual ~KvConnector() = default;

  // Tokens after the first `num_local_tokens` whose KV the connector can
  // load. Must be a multiple of the block size; the engine caps it so that
  // at least one token is computed (the last prompt token gives logits).
  virtual int MatchTokens(const KvSequenceView& seq, int num_local_tokens) = 0;

  // Loads KV of tokens [begin_token, end_token) (block aligned) into
  // `blocks`, which are the sequence's blocks for exactly that range.
  virtual Status LoadKv(const KvSequenceView& seq, int begin_token,
                        int end_token, std::span<const BlockId> blocks) = 0;

  // Starts loading KV of tokens [begin_token, end_token) into `blocks` (as
  // LoadKv). The default loads synchronously through LoadKv.
  virtual KvLoadStart StartLoadKv(const KvSequenceView& seq, KvLoadId id, int begin_token,
                                  int end_token, std::span<const BlockId> blocks) {
    (void)id;
    return KvLoadStart{false, LoadKv(seq, begin_token, end_token, blocks)};
  }

  // Asynchronous loads that ended since the last call, each reported once.
  // Called by the engine at the start of every scheduling step while loads
  // are in flight (the engine polls at least every few milliseconds then).
  virtual std::vector<KvLoadDone> PollFinishedLoads() { return {}; }

  // The sequence of load `id` went away (aborted): the connector may stop
  // the load early. It must still report it through PollFinishedLoads, after
  // which the engine frees the blocks.
  virtual void CancelLoad(KvLoadId id) { (void)id; }

  // The prompt is computed: `blocks` are its full blocks (num_prompt_tokens
  // / block_size of them), `seq.block_hashes` their names.
  virtual void OnPrefillDone(const KvSequenceView& seq,
                             std::span<const BlockId> blocks) = 0;

  // The request's last output is ready. Return false to deliver it now;
  // true to hold it until `release` is called (once, from any thread; not
  // from inside this call), e.g. when the KV saved by OnPrefillDone is
  // still being written. Implementations bound the hold (a timeout), so a
  // stuck write delays a response but never hangs it.
  virtual bool HoldFinish(std::string_view request_id, std::function<void()> release) {
    (void)request_id;
    (void)release;
    return false;
  }
};

}  // namespace crescent::engine
