// Where prompt KV lives in the store: chunking and key names.
//
// A prompt's KV goes into the store in chunks of a fixed number of tokens
// (chunk_tokens, a multiple of the KV block size). Chunk k covers the full
// blocks [k*C, (k+1)*C) (C = chunk_tokens / block_size); a prompt whose
// full blocks do not fill its last chunk stores that tail as a shorter
// chunk. A chunk is named by its lineage and by the chained hash of its last
// block (engine/block_hash.h), which covers every token from the start of
// the prompt to the chunk's end:
//
//   crescent-kv/<model fingerprint>/<kv layout tag>/tp<rank>of<size>/c<C*B>/<hash, 16 hex>
//   crescent-kv/3f9a0c1e22b4d5e6/kv1-f32-L28-H8-D128-B16/tp0of1/c256/a1b2c3d4e5f60718
//
// so KV of another model, dtype, layout, block size, tensor-parallel rank
// or chunking is never read, and two prompts that share a prefix share the
// chunks of that prefix. Since chunks start at multiples of C, a key's end
// block fixes its start: the value is exactly (end - start) blocks in the
// wire layout of model/kv_layout.h, back to back.
//
// A consumer asks the store, in one batched lookup, about the key of every
// block end after what it already has (a chunk end or a tail end may be at
// any of them) and loads the longest run of chunks that continue each other.
//
// Thread safety: pure functions over values.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/block_hash.h"

namespace crescent::kvconnector {

struct KvLineage {
  std::string model_fingerprint;  // model::Backend::model_fingerprint()
  std::string layout_tag;         // model::KvBlockLayout::Tag()
  int tp_rank = 0;
  int tp_size = 1;
  int block_size = 16;    // tokens per KV block
  int chunk_tokens = 256;  // tokens per chunk, a multiple of block_size

  int chunk_blocks() const { return chunk_tokens / block_size; }
  // "crescent-kv/<fp>/<tag>/tp0of1/c256/": every key of this lineage.
  std::string KeyPrefix() const;
};

// The key of the chunk that ends with the block named `end_hash`.
std::string ChunkKey(const KvLineage& lineage, engine::BlockHash end_hash);

// A run of whole blocks [begin_block, end_block) stored under `key`.
struct Chunk {
  int begin_block = 0;
  int end_block = 0;
  std::string key;
  int num_blocks() const { return end_block - begin_block; }
};

// The chunks that hold the first `hashes.size()` full blocks of a prompt:
// the whole chunks, then the tail (if the blocks do not end on a chunk
// boundary).
std::vector<Chunk> ChunksOfPrompt(const KvLineage& lineage,
                                  std::span<const engine::BlockHash> hashes);

// The keys a consumer that has blocks [0, first_block) looks up: one per
// block end in (first_block, hashes.size()], in that order.
std::vector<std::string> LookupKeys(const KvLineage& lineage,
                                    std::span<const engine::BlockHash> hashes, int first_block);

// Given `exists` (one flag per LookupKeys key, same order), the chunks to
// load for blocks [first_block, need_blocks): the longest run of stored
// chunks that starts at or before first_block and continues without a gap,
// up to the first chunk that reaches need_blocks. The first chunk may begin
// before first_block and the last may end after need_blocks (a prompt that
// fills its last chunk still computes its last token): only the blocks in
// between are written.
std::vector<Chunk> PlanLoad(const KvLineage& lineage, std::span<const engine::BlockHash> hashes,
                            int first_block, int need_blocks, const std::vector<bool>& exists);

}  // namespace crescent::kvconnector
