#include "model/tokenizer/utf8.h"

#include <cstdint>

namespace crescent::tokenizer {
namespace {

constexpr char32_t kReplacement = 0xFFFD;

// Classification of a byte sequence starting at in[i].
struct Scan {
  enum Kind { kValid, kInvalid, kIncomplete } kind;
  size_t len;  // bytes of the valid sequence or of the maximal invalid subpart
  char32_t cp;
};

Scan ScanOne(std::string_view in, size_t i) {
  const auto b0 = static_cast<uint8_t>(in[i]);
  if (b0 < 0x80) return {Scan::kValid, 1, b0};
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte
  char32_t cp;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {Scan::kInvalid, 1, kReplacement};
  }
  for (size_t k = 1; k < need; ++k) {
    if (i + k >= in.size()) return {Scan::kIncomplete, k, kReplacement};
    const auto b = static_cast<uint8_t>(in[i + k]);
    const uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) return {Scan::kInvalid, k, kReplacement};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {Scan::kValid, need, cp};
}

}  // namespace

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

char32_t NextCodePoint(std::string_view s, size_t* pos) {
  Scan r = ScanOne(s, *pos);
  *pos += r.len;
  return r.kind == Scan::kValid ? r.cp : kReplacement;
}

size_t AppendLossyUtf8(std::string_view in, bool final, std::string* out) {
  size_t i = 0, run = 0;  // [run, i) is valid and not yet copied
  while (i < in.size()) {
    if (static_cast<uint8_t>(in[i]) < 0x80) {
      ++i;
      continue;
    }
    Scan r = ScanOne(in, i);
    if (r.kind == Scan::kValid) {
      i += r.len;
      continue;
    }
    out->append(in.data() + run, i - run);
    if (r.kind == Scan::kIncomplete && !final) return i;
    AppendUtf8(kReplacement, out);
    i += r.len;
    run = i;
  }
  out->append(in.data() + run, i - run);
  return i;
}

bool IsValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    Scan r = ScanOne(s, i);
    if (r.kind != Scan::kValid) return false;
    i += r.len;
  }
  return true;
}

}  // namespace crescent::tokenizer
