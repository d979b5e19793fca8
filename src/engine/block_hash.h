// Chained block hashes for automatic prefix caching.
//
// A full KV block (block_size tokens) is named by a hash chained over every
// token from the start of the sequence to the end of that block:
//
//   h[0] = XXH3_64(tokens[0 .. B),        seed)
//   h[i] = XXH3_64(h[i-1] || tokens[i*B .. (i+1)*B), seed)
//
// where `||` is the 8 little-endian bytes of h[i-1] followed by the block's
// token ids as little-endian int32, and `seed` is derived from a lineage
// fingerprint (model, KV dtype and layout). Two blocks with equal hashes hold
// KV for the same model and the same complete token prefix, so a block can be
// shared between sequences (and, through the KV connector, between
// instances: the store key schema reuses these hashes).
//
// Thread safety: all functions are pure.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace crescent::engine {

using BlockHash = uint64_t;

// The hash seed for a lineage fingerprint string, e.g.
// "qwen3-0.6b@<weights digest>|kv=f32|layout=LHBD|tp=0".
uint64_t HashSeedFromFingerprint(std::string_view fingerprint);

// Hash of one full block given its parent's hash (the first block has no
// parent: pass has_parent = false).
BlockHash ChainBlockHash(bool has_parent, BlockHash parent,
                         std::span<const int32_t> block_tokens, uint64_t seed);

// Extends `hashes` (the chained hashes of the leading full blocks of
// `tokens`) to cover every full block of `tokens`. Hashes already present are
// kept, so a growing sequence pays only for its new blocks.
void ExtendBlockHashes(std::span<const int32_t> tokens, int block_size,
                       uint64_t seed, std::vector<BlockHash>* hashes);

}  // namespace crescent::engine
