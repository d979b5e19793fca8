// Memory-mapped safetensors checkpoints.
//
// A safetensors file is an 8-byte little-endian header length N, N bytes
// of JSON ({name: {"dtype", "shape", "data_offsets": [begin, end]}, and an
// optional "__metadata__"}), then the tensor bytes (offsets relative to the
// end of the header). A Hugging Face model directory holds either one
// model.safetensors or shards model-0000i-of-0000n.safetensors listed by
// model.safetensors.index.json ({"weight_map": {name: file}}).
//
// Checkpoint maps every file read-only (pages come from the page cache on
// first touch) and indexes all tensors. The header of every file is
// validated fully at open (a parser of untrusted bytes): offsets inside the
// file, byte size = product(shape) * element size, no overlap past the end;
// a truncated file is a DATA_LOSS error naming the file and tensor.
//
// Thread safety: immutable after Open; TensorViews stay valid for the
// Checkpoint's lifetime.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace crescent::model {

enum class DType : uint8_t { kF32, kF16, kBF16, kI64, kI32, kI8, kU8, kBool, kF64, kI16 };

std::string_view DTypeName(DType dtype);  // "BF16", ... as safetensors spells them
size_t DTypeSize(DType dtype);

// A borrowed view of one tensor's bytes inside a mapped file.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // aligned as the file places it (2-byte types: 2)
  size_t bytes = 0;

  int64_t NumElements() const;
  std::string ShapeString() const;  // "[1024, 64]"
};

class Checkpoint {
 public:
  // Opens <dir>/model.safetensors, or the shards of
  // <dir>/model.safetensors.index.json when it exists.
  static StatusOr<std::unique_ptr<Checkpoint>> Open(std::string_view dir);
  // Opens a single file (tests, tools).
  static StatusOr<std::unique_ptr<Checkpoint>> OpenFile(std::string_view path);

  ~Checkpoint();
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  // NOT_FOUND names the tensor and the directory.
  StatusOr<const TensorView*> Find(std::string_view name) const;
  bool Has(std::string_view name) const;
  const std::map<std::string, TensorView, std::less<>>& tensors() const { return tensors_; }
  const std::string& dir() const { return dir_; }
  // The JSON headers of all files in order (for fingerprints).
  const std::vector<std::string>& headers() const { return headers_; }

 private:
  Checkpoint() = default;
  Status MapFile(const std::string& path);

  struct Mapping {
    void* addr = nullptr;
    size_t length = 0;
  };
  std::string dir_;
  std::vector<Mapping> mappings_;
  std::vector<std::string> headers_;
  std::map<std::string, TensorView, std::less<>> tensors_;
};

// Parses and validates the header of a safetensors file held in
// [base, base + size); views point into that range. `path` names the file
// in errors. Checkpoint uses it on each mapped file; exposed for the fuzzer
// (safetensors_fuzz.cc).
Status ParseSafetensors(const char* base, size_t size, const std::string& path,
                        std::vector<TensorView>* out, std::string* header);

// Writes a safetensors file: tensors in the order of `specs`; `fill` is
// called once per tensor, in order, with a buffer of exactly
// product(shape) * DTypeSize(dtype) bytes to fill with little-endian data.
// Streams, so a multi-GB checkpoint needs little memory. Used by
// make-model and tests.
struct TensorSpec {
  std::string name;
  DType dtype = DType::kBF16;
  std::vector<int64_t> shape;
};
Status WriteSafetensors(std::string_view path, const std::vector<TensorSpec>& specs,
                        const std::function<void(size_t index, std::span<char> buffer)>& fill);

}  // namespace crescent::model
