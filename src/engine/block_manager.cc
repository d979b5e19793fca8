#include "engine/block_manager.h"

#include <fmt/format.h>

#include <cassert>

namespace crescent::engine {

BlockManager::BlockManager(const BlockManagerOptions& options)
    : block_size_(options.block_size),
      enable_prefix_caching_(options.enable_prefix_caching),
      ref_count_(options.num_blocks, 0),
      hash_(options.num_blocks, 0),
      has_hash_(options.num_blocks, 0),
      prev_(options.num_blocks, kNone),
      next_(options.num_blocks, kNone),
      on_free_list_(options.num_blocks, 0) {
  assert(options.block_size > 0 && options.num_blocks >= 0);
  for (BlockId id = 0; id < options.num_blocks; ++id) PushFreeTail(id);
}

double BlockManager::Usage() const {
  if (num_blocks() == 0) return 0.0;
  return static_cast<double>(num_blocks() - num_free_) / num_blocks();
}

std::vector<BlockId> BlockManager::FindCachedPrefix(
    std::span<const BlockHash> hashes) const {
  std::vector<BlockId> found;
  if (!enable_prefix_caching_) return found;
  for (BlockHash h : hashes) {
    auto it = cached_.find(h);
    if (it == cached_.end()) break;
    found.push_back(it->second);
  }
  return found;
}

void BlockManager::RecordLookup(uint64_t query_tokens, uint64_t hit_tokens) {
  stats_.prefix_cache_queries += query_tokens;
  stats_.prefix_cache_hits += hit_tokens;
}

int BlockManager::BlocksNeeded(const BlockTable& table, int num_tokens,
                               std::span<const BlockId> cached_prefix) const {
  const int want = (num_tokens + block_size_ - 1) / block_size_;
  int have = static_cast<int>(table.blocks.size());
  int needed = 0;
  if (table.blocks.empty()) {
    have = static_cast<int>(cached_prefix.size());
    for (BlockId id : cached_prefix) needed += ref_count_[id] == 0 ? 1 : 0;
  }
  return needed + std::max(0, want - have);
}

bool BlockManager::Allocate(BlockTable* table, int num_tokens,
                            std::span<const BlockId> cached_prefix) {
  if (BlocksNeeded(*table, num_tokens, cached_prefix) > num_free_) return false;
  if (table->blocks.empty() && !cached_prefix.empty()) {
    for (BlockId id : cached_prefix) {
      Reference(id);
      table->blocks.push_back(id);
    }
    table->num_cached_blocks = static_cast<int>(cached_prefix.size());
  }
  const size_t want = (num_tokens + block_size_ - 1) / block_size_;
  while (table->blocks.size() < want) {
    BlockId id = PopFree();
    ref_count_[id] = 1;
    table->blocks.push_back(id);
  }
  return true;
}

void BlockManager::CacheFullBlocks(BlockTable* table,
                                   std::span<const BlockHash> hashes,
                                   int num_full_blocks) {
  assert(num_full_blocks <= static_cast<int>(table->blocks.size()));
  assert(num_full_blocks <= static_cast<int>(hashes.size()));
  if (!enable_prefix_caching_) return;
  for (int i = table->num_cached_blocks; i < num_full_blocks; ++i) {
    const BlockId id = table->blocks[i];
    if (has_hash_[id]) continue;  // a shared block, cached already
    auto [it, inserted] = cached_.try_emplace(hashes[i], id);
    if (inserted) {
      hash_[id] = hashes[i];
      has_hash_[id] = 1;
    }
  }
  table->num_cached_blocks = std::max(table->num_cached_blocks, num_full_blocks);
}

void BlockManager::Free(BlockTable* table) {
  for (auto it = table->blocks.rbegin(); it != table->blocks.rend(); ++it) {
    const BlockId id = *it;
    assert(ref_count_[id] > 0);
    if (--ref_count_[id] == 0) {
      if (has_hash_[id]) {
        PushFreeTail(id);
      } else {
        // Nothing cached in it: hand it out before any cached block.
        if (head_ == kNone) {
          PushFreeTail(id);
        } else {
          prev_[id] = kNone;
          next_[id] = head_;
          prev_[head_] = id;
          head_ = id;
          on_free_list_[id] = 1;
          ++num_free_;
        }
      }
    }
  }
  table->blocks.clear();
  table->num_cached_blocks = 0;
}

void BlockManager::ResetPrefixCache() {
  for (auto it = cached_.begin(); it != cached_.end();) {
    if (ref_count_[it->second] == 0) {
      has_hash_[it->second] = 0;
      it = cached_.erase(it);
    } else {
      ++it;
    }
  }
}

BlockId BlockManager::PopFree() {
  assert(head_ != kNone);
  const BlockId id = head_;
  Unlink(id);
  if (has_hash_[id]) {
    cached_.erase(hash_[id]);
    has_hash_[id] = 0;
    ++stats_.evictions;
  }
  return id;
}

void BlockManager::PushFreeTail(BlockId id) {
  prev_[id] = tail_;
  next_[id] = kNone;
  if (tail_ != kNone) next_[tail_] = id; else head_ = id;
  tail_ = id;
  on_free_list_[id] = 1;
  ++num_free_;
}

void BlockManager::Unlink(BlockId id) {
  assert(on_free_list_[id]);
  if (prev_[id] != kNone) next_[prev_[id]] = next_[id]; else head_ = next_[id];
  if (next_[id] != kNone) prev_[next_[id]] = prev_[id]; else tail_ = prev_[id];
  prev_[id] = next_[id] = kNone;
  on_free_list_[id] = 0;
  --num_free_;
}

void BlockManager::Reference(BlockId id) {
  if (ref_count_[id] == 0) Unlink(id);
  ++ref_count_[id];
}

Status BlockManager::CheckInvariants() const {
  int listed = 0;
  BlockId prev = kNone;
  for (BlockId id = head_; id != kNone; id = next_[id]) {
    if (++listed > num_blocks()) return InternalError("free list has a cycle");
    if (prev_[id] != prev) return InternalError(fmt::format("block {}: bad prev link", id));
    if (!on_free_list_[id]) return InternalError(fmt::format("block {}: listed but not marked free", id));
    if (ref_count_[id] != 0)
      return InternalError(fmt::format("block {} is free but has ref_count {}", id, ref_count_[id]));
    prev = id;
  }
  if (prev != tail_) return InternalError("free list tail mismatch");
  if (listed != num_free_)
    return InternalError(fmt::format("free list has {} blocks, counter says {}", listed, num_free_));
  for (BlockId id = 0; id < num_blocks(); ++id) {
    if (ref_count_[id] < 0) return InternalError(fmt::format("block {}: negative ref_count", id));
    if (ref_count_[id] == 0 && !on_free_list_[id])
      return InternalError(fmt::format("block {} leaked: unreferenced and not free", id));
    if (has_hash_[id]) {
      auto it = cached_.find(hash_[id]);
      if (it == cached_.end() || it->second != id)
        return InternalError(fmt::format("block {}: hash not mapped back to it", id));
    }
  }
  for (const auto& [h, id] : cached_) {
    if (!has_hash_[id] || hash_[id] != h)
      return InternalError(fmt::format("hash map points at block {} with another hash", id));
  }
  return OkStatus();
}

}  // namespace crescent::engine
