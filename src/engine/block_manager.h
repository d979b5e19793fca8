// Block manager: the paged KV cache's blocks, shared by reference count, with
// automatic prefix caching.
//
// The model's KV cache is a pool of `num_blocks` blocks of `block_size`
// token slots each; a sequence's KV lives in the blocks of its block table
// (table[i] holds positions [i*B, (i+1)*B)). This class decides which block
// ids a sequence uses; it never touches KV bytes.
//
// Prefix caching: once a block is full and its KV computed, it is registered
// under its chained hash (block_hash.h). A new sequence whose leading blocks
// hash the same takes references on those blocks instead of recomputing them.
// A block whose reference count drops to zero keeps its KV and its hash and
// goes to the tail of a free list; allocation takes blocks from the head, so
// cached blocks are reused least-recently-freed first (LRU) and a cached block
// is evicted (its hash forgotten) only when it is handed out again. A cached
// block with no references that a sequence hits is taken off the free list.
//
// Invariants (CheckInvariants verifies them; tests call it after every
// operation):
//  - every block is either on the free list (ref_count 0) or referenced
//    (ref_count = number of block tables that hold it); never both;
//  - the hash map points only at blocks whose recorded hash is that key;
//  - num_free_blocks() + referenced blocks == num_blocks.
//
// Thread safety: none; the scheduler owns it on the engine thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "engine/block_hash.h"

namespace crescent::engine {

using BlockId = int32_t;

struct BlockManagerOptions {
  int num_blocks = 0;   // blocks in the model's KV pool
  int block_size = 16;  // token slots per block
  bool enable_prefix_caching = true;
};

// Counters since construction; prefix-cache figures are in tokens, as
// vLLM's vllm:prefix_cache_queries / vllm:prefix_cache_hits.
struct BlockManagerStats {
  uint64_t prefix_cache_queries = 0;  // prompt tokens looked up
  uint64_t prefix_cache_hits = 0;     // of which found cached
  uint64_t evictions = 0;             // cached blocks reused for new content
};

// A sequence's blocks. Owned by the sequence; filled and emptied only
// through BlockManager.
struct BlockTable {
  std::vector<BlockId> blocks;
  // Leading blocks already registered in the prefix cache (hashed).
  int num_cached_blocks = 0;
};

class BlockManager {
 public:
  explicit BlockManager(const BlockManagerOptions& options);
  BlockManager(const BlockManager&) = delete;
  BlockManager& operator=(const BlockManager&) = delete;

  int block_size() const { return block_size_; }
  int num_blocks() const { return static_cast<int>(ref_count_.size()); }
  // Blocks that an allocation can take: unreferenced, cached or not.
  int num_free_blocks() const { return num_free_; }
  // Fraction of blocks referenced by some sequence (vllm:kv_cache_usage_perc).
  double Usage() const;
  const BlockManagerStats& stats() const { return stats_; }

  // The longest run of leading blocks of `hashes` found in the cache. Does
  // not take references; call Allocate with the result in the same step.
  std::vector<BlockId> FindCachedPrefix(std::span<const BlockHash> hashes) const;

  // Records a prefix-cache lookup of `query_tokens` of which `hit_tokens`
  // were found, for the metrics.
  void RecordLookup(uint64_t query_tokens, uint64_t hit_tokens);

  // Makes `table` cover `num_tokens` token slots. When `table` is empty,
  // `cached_prefix` (from FindCachedPrefix) becomes its first blocks, with a
  // reference taken on each and num_cached_blocks set to its length. Returns
  // false, changing nothing, when not enough free blocks remain.
  bool Allocate(BlockTable* table, int num_tokens,
                std::span<const BlockId> cached_prefix = {});

  // Free blocks that Allocate(table, num_tokens, cached_prefix) would take.
  int BlocksNeeded(const BlockTable& table, int num_tokens,
                   std::span<const BlockId> cached_prefix = {}) const;

  // Registers the table's blocks [num_cached_blocks, num_full_blocks) under
  // `hashes` (the sequence's chained hashes; at least num_full_blocks long).
  // The caller guarantees their KV is computed. A hash already held by
  // another block leaves this block unregistered (its twin serves hits).
  void CacheFullBlocks(BlockTable* table, std::span<const BlockHash> hashes,
                       int num_full_blocks);

  // Drops the table's references and empties it. Blocks that reach zero go to
  // the free list tail-first, so that the end of a prompt is evicted before
  // its beginning (which more requests share).
  void Free(BlockTable* table);

  // Evicts every unreferenced cached block (e.g. after weights change).
  void ResetPrefixCache();

  // For tests and debugging.
  int ref_count(BlockId id) const { return ref_count_[id]; }
  int num_cached_hashes() const { return static_cast<int>(cached_.size()); }
  Status CheckInvariants() const;

 private:
  static constexpr BlockId kNone = -1;

  BlockId PopFree();                 // head of the free list; evicts its hash
  void PushFreeTail(BlockId id);
  void Unlink(BlockId id);           // remove from the free list
  void Reference(BlockId id);        // +1; off the free list when it was 0

  const int block_size_;
  const bool enable_prefix_caching_;

  std::vector<int32_t> ref_count_;   // [num_blocks]
  std::vector<BlockHash> hash_;      // [num_blocks], valid when has_hash_
  std::vector<uint8_t> has_hash_;    // [num_blocks]
  // Free list: a doubly linked list threaded through these arrays.
  std::vector<BlockId> prev_, next_; // [num_blocks]
  std::vector<uint8_t> on_free_list_;
  BlockId head_ = kNone, tail_ = kNone;
  int num_free_ = 0;
  std::unordered_map<BlockHash, BlockId> cached_;
  BlockManagerStats stats_;
};

}  // namespace crescent::engine
