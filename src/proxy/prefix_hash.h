// Prefix keys for cache-aware routing.
//
// A prompt is cut into fixed-size blocks and block i gets the hash of
// blocks 0..i (a chain), so two prompts share hash i exactly when they share
// their first i+1 blocks. With the model's tokenizer the blocks are tokens
// (what an instance's prefix cache and the KV store key on); without one,
// bytes of the prompt text. A partial last block gets no hash: a cache
// holds whole blocks only.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace crescent::proxy {

std::vector<uint64_t> ChainedBlockHashes(std::span<const int32_t> tokens, size_t block_tokens);
std::vector<uint64_t> ChainedByteBlockHashes(std::string_view text, size_t block_bytes);

}  // namespace crescent::proxy
