// The paged KV block layout: a wire format.
//
// A KV block holds the keys and values of `block_size` consecutive token
// positions of one sequence, for every layer. Blocks move between
// instances through the KV store byte for byte, so this layout is fixed and
// versioned; docs/kv_layout.md is the prose spec of the same thing (keep
// both in step; bump kKvLayoutVersion on any change).
//
// One block is one contiguous byte range, row-major over
//   [layer L][kind 2: K=0, V=1][kv_head Hkv][slot B][dim D]
// of little-endian elements of `dtype`. Slot s of block j of a sequence's
// block table holds position j * B + s. K is stored after the q/k RMSNorm
// (Qwen3) and after RoPE (rotate-half convention of Hugging Face); V as
// projected (bias included). Slots past a sequence's end are unspecified.
//
// Thread safety: constants and pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace crescent::model {

// Version of the byte layout above. Part of every stored KV object's key
// lineage (see KvBlockLayout::Tag) so that blocks of another layout are
// never read.
inline constexpr uint32_t kKvLayoutVersion = 1;

// Element types a block may hold. Values are on the wire; never reuse one.
enum class KvDtype : uint8_t {
  kFloat32 = 0,   // IEEE-754 binary32, little-endian (the CPU backend's)
  kBFloat16 = 1,  // bfloat16, little-endian (the CUDA backend's)
  kFloat16 = 2,   // reserved
};

inline constexpr size_t KvDtypeSize(KvDtype dtype) { return dtype == KvDtype::kFloat32 ? 4 : 2; }
const char* KvDtypeName(KvDtype dtype);  // "f32", "bf16", "f16"

inline constexpr int kKvKindKey = 0;
inline constexpr int kKvKindValue = 1;
inline constexpr int kKvKinds = 2;

// Default tokens per block (vLLM's default as well).
inline constexpr int32_t kDefaultKvBlockSize = 16;

// The shape of one block; all fields constant for a loaded model.
struct KvBlockLayout {
  int32_t num_layers = 0;    // L
  int32_t num_kv_heads = 0;  // Hkv
  int32_t head_dim = 0;      // D
  int32_t block_size = 0;    // B, tokens per block
  KvDtype dtype = KvDtype::kFloat32;

  // Elements of one [slot][dim] plane of one (layer, kind, head): B * D.
  constexpr size_t PlaneElements() const { return static_cast<size_t>(block_size) * head_dim; }
  // Elements in one whole block: L * 2 * Hkv * B * D.
  constexpr size_t BlockElements() const {
    return static_cast<size_t>(num_layers) * kKvKinds * num_kv_heads * PlaneElements();
  }
  // Bytes of one whole block (the unit the KV connector moves).
  constexpr size_t BlockBytes() const { return BlockElements() * KvDtypeSize(dtype); }
  // Element offset, inside a block, of (layer, kind, head, slot, dim 0).
  constexpr size_t ElementOffset(int layer, int kind, int head, int slot) const {
    return ((static_cast<size_t>(layer) * kKvKinds + kind) * num_kv_heads + head) *
               PlaneElements() +
           static_cast<size_t>(slot) * head_dim;
  }

  // "kv1-f32-L28-H8-D128-B16": names the layout in store keys.
  std::string Tag() const;

  friend bool operator==(const KvBlockLayout&, const KvBlockLayout&) = default;
};

}  // namespace crescent::model
