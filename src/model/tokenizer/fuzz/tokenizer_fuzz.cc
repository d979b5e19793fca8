// libFuzzer target: encode arbitrary bytes with the real Qwen3 tokenizer and
// check the invariants a server relies on. Build and run: see
// docs/benchmarks.md ("Tokenizer fuzzing") or fuzz/CMakeLists.txt.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "model/tokenizer/detokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/utf8.h"

namespace {
std::unique_ptr<crescent::Tokenizer> g_tokenizer;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("CRESCENT_TOKENIZER_DIR");
  auto tok = crescent::Tokenizer::Load(dir ? dir : ".cache/tokenizer-qwen3");
  if (!tok.ok()) {
    std::fprintf(stderr, "tokenizer_fuzz: %s (set CRESCENT_TOKENIZER_DIR)\n", tok.status().ToString().c_str());
    std::abort();
  }
  g_tokenizer = std::move(tok).value();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto ids = g_tokenizer->Encode(text, /*add_special_tokens=*/true);
  for (int32_t id : ids) {
    if (id < 0 || id >= g_tokenizer->VocabSize()) std::abort();
  }
  // Plain text without added tokens loses no byte when NFC leaves it alone
  // (ASCII is always NFC).
  bool ascii = true;
  for (char c : text) ascii &= static_cast<unsigned char>(c) < 0x80;
  if (ascii) {
    std::string bytes;
    for (int32_t id : ids) bytes += g_tokenizer->TokenBytes(id);
    if (bytes != text) std::abort();
  }
  const std::string decoded = g_tokenizer->Decode(ids);
  if (!crescent::tokenizer::IsValidUtf8(decoded)) std::abort();
  crescent::Detokenizer detok(*g_tokenizer, /*skip_special_tokens=*/false);
  std::string streamed;
  for (int32_t id : ids) {
    std::string piece = detok.Add(id);
    if (!crescent::tokenizer::IsValidUtf8(piece)) std::abort();
    streamed += piece;
  }
  streamed += detok.Finish();
  if (streamed != decoded) std::abort();
  return 0;
}
