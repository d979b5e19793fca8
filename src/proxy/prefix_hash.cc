#include "proxy/prefix_hash.h"

#include <xxhash.h>

namespace crescent::proxy {
namespace {

template <typename T>
std::vector<uint64_t> Chain(std::span<const T> items, size_t block) {
  std::vector<uint64_t> out;
  if (block == 0) return out;
  out.reserve(items.size() / block);
  uint64_t h = 0x9e3779b97f4a7c15ull;  // seed of the chain
  for (size_t start = 0; start + block <= items.size(); start += block) {
    h = XXH3_64bits_withSeed(items.data() + start, block * sizeof(T), h);
    out.push_back(h);
  }
  return out;
}

}  // namespace

std::vector<uint64_t> ChainedBlockHashes(std::span<const int32_t> tokens, size_t block_tokens) {
  return Chain(tokens, block_tokens);
}

std::vector<uint64_t> ChainedByteBlockHashes(std::string_view text, size_t block_bytes) {
  return Chain(std::span<const char>(text.data(), text.size()), block_bytes);
}

}  // namespace crescent::proxy
