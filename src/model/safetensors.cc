#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "common/config.h"

namespace crescent::model {
namespace {

using nlohmann::json;

// Headers larger than this are not checkpoints (the format caps it too).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DTypeInfo {
  const char* name;
  DType dtype;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {"F32", DType::kF32, 4}, {"F16", DType::kF16, 2},   {"BF16", DType::kBF16, 2},
    {"I64", DType::kI64, 8}, {"I32", DType::kI32, 4},   {"I8", DType::kI8, 1},
    {"U8", DType::kU8, 1},   {"BOOL", DType::kBool, 1}, {"F64", DType::kF64, 8},
    {"I16", DType::kI16, 2},
};

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

std::string_view DTypeName(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.name;
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.size;
  }
  return 0;
}

int64_t TensorView::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::ShapeString() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

Checkpoint::~Checkpoint() {
  for (const Mapping& m : mappings_) {
    if (m.addr) ::munmap(m.addr, m.length);
  }
}

StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::OpenFile(std::string_view path) {
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  std::string p(path);
  auto slash = p.rfind('/');
  ckpt->dir_ = slash == std::string::npos ? "." : p.substr(0, slash);
  RETURN_IF_ERROR(ckpt->MapFile(p));
  return ckpt;
}

StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(std::string_view dir) {
  std::string d(dir);
  std::string index_path = d + "/model.safetensors.index.json";
  std::string single_path = d + "/model.safetensors";
  std::unique_ptr<Checkpoint> ckpt(new Checkpoint());
  ckpt->dir_ = d;
  if (FileExists(index_path)) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(index_path));
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") ||
        !j["weight_map"].is_object()) {
      return InvalidArgumentError(index_path +
                                  ": not a safetensors index (expected {\"weight_map\": "
                                  "{tensor: file}})");
    }
    std::set<std::string> files;
    for (auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string()) {
        return InvalidArgumentError(index_path + ": weight_map[\"" + name + "\"] is not a string");
      }
      std::string f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f.find("..") != std::string::npos) {
        return InvalidArgumentError(index_path + ": shard name \"" + f +
                                    "\" must be a plain file name in the model directory");
      }
      files.insert(f);
    }
    for (const std::string& f : files) RETURN_IF_ERROR(ckpt->MapFile(d + "/" + f));
    // Every tensor the index names must be in the shard it names.
    for (auto& [name, file] : j["weight_map"].items()) {
      if (!ckpt->Has(name)) {
        return DataLossError(index_path + ": tensor " + name + " is listed in shard " +
                             file.get<std::string>() + " but that file does not hold it");
      }
    }
  } else if (FileExists(single_path)) {
    RETURN_IF_ERROR(ckpt->MapFile(single_path));
  } else {
    return NotFoundError(d +
                         ": neither model.safetensors nor model.safetensors.index.json "
                         "found (Hugging Face safetensors checkpoints only)");
  }
  return ckpt;
}

Status Checkpoint::MapFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open " + path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoToStatus(err, "stat " + path);
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return DataLossError(path + ": truncated safetensors file (" + std::to_string(size) +
                         " bytes, shorter than the 8-byte header length)");
  }
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);
  if (addr == MAP_FAILED) return ErrnoToStatus(err, "mmap " + path);
  mappings_.push_back({addr, size});
  std::vector<TensorView> views;
  std::string header;
  RETURN_IF_ERROR(ParseSafetensors(static_cast<const char*>(addr), size, path, &views, &header));
  for (TensorView& t : views) {
    if (tensors_.count(t.name)) {
      return DataLossError(path + ": tensor " + t.name + " appears in two files of the checkpoint");
    }
    std::string name = t.name;
    tensors_.emplace(std::move(name), std::move(t));
  }
  headers_.push_back(std::move(header));
  return OkStatus();
}

Status ParseSafetensors(const char* base, size_t size, const std::string& path,
                        std::vector<TensorView>* out, std::string* header_out) {
  if (size < 8) {
    return DataLossError(path + ": truncated safetensors file (" + std::to_string(size) +
                         " bytes, shorter than the 8-byte header length)");
  }

  uint64_t header_len;
  std::memcpy(&header_len, base, 8);  // little-endian host (x86-64, aarch64)
  if (header_len > kMaxHeaderBytes || 8 + header_len > size) {
    return DataLossError(path + ": header length " + std::to_string(header_len) +
                         " exceeds the file size " + std::to_string(size) +
                         " (truncated or not a safetensors file)");
  }
  std::string header(base + 8, header_len);
  json j = json::parse(header, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return DataLossError(path + ": header is not a JSON object (not a safetensors file?)");
  }
  const size_t data_begin = 8 + header_len;
  const size_t data_size = size - data_begin;
  for (auto& [name, entry] : j.items()) {
    if (name == "__metadata__") continue;
    std::string what = path + ": tensor " + name;
    if (!entry.is_object() || !entry.contains("dtype") || !entry["dtype"].is_string() ||
        !entry.contains("shape") || !entry["shape"].is_array() || !entry.contains("data_offsets") ||
        !entry["data_offsets"].is_array() || entry["data_offsets"].size() != 2) {
      return DataLossError(what + ": header entry lacks dtype/shape/data_offsets");
    }
    TensorView t;
    t.name = name;
    std::string dt = entry["dtype"].get<std::string>();
    size_t esize = 0;
    for (const auto& d : kDTypes) {
      if (dt == d.name) {
        t.dtype = d.dtype;
        esize = d.size;
      }
    }
    if (esize == 0) return UnimplementedError(what + ": dtype " + dt + " is not supported");
    uint64_t elements = 1;
    for (const json& dim : entry["shape"]) {
      if (!dim.is_number_unsigned()) return DataLossError(what + ": shape has a bad dimension");
      uint64_t v = dim.get<uint64_t>();
      if (v != 0 && elements > (1ull << 48) / v) return DataLossError(what + ": shape overflows");
      elements *= v;
      t.shape.push_back(static_cast<int64_t>(v));
    }
    const json& off = entry["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return DataLossError(what + ": data_offsets must be non-negative integers");
    }
    uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
    if (b > e || e > data_size) {
      return DataLossError(what + " " + t.ShapeString() + " " + dt + ": bytes [" +
                           std::to_string(b) + ", " + std::to_string(e) + ") lie past the end (" +
                           std::to_string(data_size) + " data bytes): the file is truncated");
    }
    if (e - b != elements * esize) {
      return DataLossError(what + ": " + std::to_string(e - b) + " bytes do not match shape " +
                           t.ShapeString() + " of " + dt + " (" + std::to_string(elements * esize) +
                           " bytes)");
    }
    t.data = base + data_begin + b;
    t.bytes = e - b;
    out->push_back(std::move(t));
  }
  *header_out = std::move(header);
  return OkStatus();
}


StatusOr<const TensorView*> Checkpoint::Find(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return NotFoundError("tensor " + std::string(name) + " is missing from the checkpoint in " +
                         dir_);
  }
  return &it->second;
}

bool Checkpoint::Has(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }

Status WriteSafetensors(std::string_view path, const std::vector<TensorSpec>& specs,
                        const std::function<void(size_t, std::span<char>)>& fill) {
  json header = json::object();
  uint64_t offset = 0;
  std::vector<uint64_t> sizes;
  for (const TensorSpec& s : specs) {
    uint64_t n = DTypeSize(s.dtype);
    for (int64_t d : s.shape) n *= static_cast<uint64_t>(d);
    header[s.name] = {{"dtype", std::string(DTypeName(s.dtype))},
                      {"shape", s.shape},
                      {"data_offsets", {offset, offset + n}}};
    offset += n;
    sizes.push_back(n);
  }
  header["__metadata__"] = {{"format", "pt"}};
  std::string h = header.dump();
  while ((h.size() + 8) % 8 != 0) h += ' ';  // align the data section to 8 bytes
  std::string p(path);
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  if (!out) return ErrnoToStatus(errno, "create " + p);
  uint64_t len = h.size();
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  std::vector<char> buf;
  for (size_t i = 0; i < specs.size(); ++i) {
    buf.assign(sizes[i], 0);
    fill(i, std::span<char>(buf.data(), buf.size()));
    out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
  }
  out.close();
  if (!out) return ErrnoToStatus(errno, "write " + p);
  return OkStatus();
}

}  // namespace crescent::model
