#include "engine/block_hash.h"

#include <xxhash.h>

#include <bit>
#include <cstring>

namespace crescent::engine {

uint64_t HashSeedFromFingerprint(std::string_view fingerprint) {
  // A fixed domain separator so that an empty fingerprint still yields a
  // seed distinct from "no seed".
  constexpr uint64_t kDomain = 0x6372657363656e74ULL;  // "crescent"
  return XXH3_64bits_withSeed(fingerprint.data(), fingerprint.size(), kDomain);
}

BlockHash ChainBlockHash(bool has_parent, BlockHash parent,
                         std::span<const int32_t> block_tokens, uint64_t seed) {
  // The hosts we build for are little-endian, so parent's bytes and the
  // int32 array are already in wire order.
  static_assert(std::endian::native == std::endian::little);
  const size_t parent_bytes = has_parent ? sizeof(parent) : 0;
  const size_t n = parent_bytes + block_tokens.size_bytes();
  uint8_t stack[8 + 4 * 64];
  std::vector<uint8_t> heap;
  uint8_t* buf = stack;
  if (n > sizeof(stack)) {
    heap.resize(n);
    buf = heap.data();
  }
  if (has_parent) std::memcpy(buf, &parent, sizeof(parent));
  std::memcpy(buf + parent_bytes, block_tokens.data(), block_tokens.size_bytes());
  return XXH3_64bits_withSeed(buf, n, seed);
}

void ExtendBlockHashes(std::span<const int32_t> tokens, int block_size,
                       uint64_t seed, std::vector<BlockHash>* hashes) {
  const size_t full = tokens.size() / static_cast<size_t>(block_size);
  for (size_t i = hashes->size(); i < full; ++i) {
    const bool has_parent = i > 0;
    const BlockHash parent = has_parent ? (*hashes)[i - 1] : 0;
    hashes->push_back(ChainBlockHash(
        has_parent, parent, tokens.subspan(i * block_size, block_size), seed));
  }
}

}  // namespace crescent::engine
