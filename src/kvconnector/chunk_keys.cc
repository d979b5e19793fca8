#include "kvconnector/chunk_keys.h"

#include <fmt/format.h>

#include <algorithm>

namespace crescent::kvconnector {

std::string KvLineage::KeyPrefix() const {
  return fmt::format("crescent-kv/{}/{}/tp{}of{}/c{}/", model_fingerprint, layout_tag, tp_rank,
                     tp_size, chunk_tokens);
}

std::string ChunkKey(const KvLineage& lineage, engine::BlockHash end_hash) {
  return fmt::format("{}{:016x}", lineage.KeyPrefix(), end_hash);
}

std::vector<Chunk> ChunksOfPrompt(const KvLineage& lineage,
                                  std::span<const engine::BlockHash> hashes) {
  const int n = static_cast<int>(hashes.size());
  const int c = lineage.chunk_blocks();
  std::vector<Chunk> chunks;
  for (int begin = 0; begin < n; begin += c) {
    const int end = std::min(begin + c, n);
    chunks.push_back({begin, end, ChunkKey(lineage, hashes[end - 1])});
  }
  return chunks;
}

std::vector<std::string> LookupKeys(const KvLineage& lineage,
                                    std::span<const engine::BlockHash> hashes, int first_block) {
  std::vector<std::string> keys;
  for (int end = first_block + 1; end <= static_cast<int>(hashes.size()); ++end)
    keys.push_back(ChunkKey(lineage, hashes[end - 1]));
  return keys;
}

std::vector<Chunk> PlanLoad(const KvLineage& lineage, std::span<const engine::BlockHash> hashes,
                            int first_block, int need_blocks, const std::vector<bool>& exists) {
  const int n = static_cast<int>(hashes.size());
  const int c = lineage.chunk_blocks();
  auto stored = [&](int end) {
    const size_t i = static_cast<size_t>(end - first_block - 1);
    return end > first_block && end <= n && i < exists.size() && exists[i];
  };
  std::vector<Chunk> plan;
  int pos = first_block;  // blocks [0, pos) are covered
  while (pos < need_blocks) {
    const int chunk_begin = pos / c * c;
    const int whole_end = chunk_begin + c;
    if (stored(whole_end)) {
      plan.push_back({chunk_begin, whole_end, ChunkKey(lineage, hashes[whole_end - 1])});
      pos = whole_end;
      continue;
    }
    // No whole chunk: the longest tail of this chunk (a shorter prompt's
    // last chunk) ends the run.
    for (int end = std::min(whole_end - 1, n); end > pos; --end) {
      if (stored(end)) {
        plan.push_back({chunk_begin, end, ChunkKey(lineage, hashes[end - 1])});
        break;
      }
    }
    break;
  }
  return plan;
}

}  // namespace crescent::kvconnector
