// libFuzzer target for the safetensors header parser (untrusted bytes):
// any input must give OK with views inside the input, or an error; never a
// crash or an out-of-bounds view. Build with -DCRESCENT_FUZZ=ON (clang).
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<crescent::model::TensorView> views;
  std::string header;
  const char* base = reinterpret_cast<const char*>(data);
  crescent::Status s = crescent::model::ParseSafetensors(base, size, "fuzz", &views, &header);
  if (!s.ok()) return 0;
  for (const auto& t : views) {
    const char* p = static_cast<const char*>(t.data);
    if (p < base || p + t.bytes > base + size) std::abort();
  }
  return 0;
}
