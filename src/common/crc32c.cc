#include "common/crc32c.h"

#include <immintrin.h>

#include <array>
#include <cstring>

namespace crescent {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

// Byte-at-a-time table for CPUs without SSE4.2 and for tails.
constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kTable = MakeTable();

uint32_t RawSoftware(uint32_t r, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) r = kTable[(r ^ p[i]) & 0xFF] ^ (r >> 8);
  return r;
}

// a(x) * b(x) mod P in the reflected representation (bit 31 is x^0).
uint32_t MultModP(uint32_t a, uint32_t b) {
  uint32_t m = 1u << 31, p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = (b & 1) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return p;
}

// kX2N[k] = x^(2^k) mod P.
struct X2NTable {
  uint32_t v[32];
  X2NTable() {
    uint32_t p = 1u << 30;  // x^1
    v[0] = p;
    for (int k = 1; k < 32; ++k) v[k] = p = MultModP(p, p);
  }
};
const X2NTable kX2N;

// x^(n * 2^k) mod P.
uint32_t X2NModP(size_t n, unsigned k) {
  uint32_t p = 1u << 31;  // x^0
  while (n) {
    if (n & 1) p = MultModP(kX2N.v[k & 31], p);
    n >>= 1;
    ++k;
  }
  return p;
}

// The register after feeding `bytes` zero bytes into register r.
uint32_t ShiftBytes(uint32_t r, size_t bytes) { return MultModP(X2NModP(bytes, 3), r); }

__attribute__((target("sse4.2"))) uint32_t RawSingle(uint32_t r, const uint8_t* p, size_t n) {
  uint64_t r64 = r;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    r64 = _mm_crc32_u64(r64, w);
    p += 8;
    n -= 8;
  }
  uint32_t r32 = static_cast<uint32_t>(r64);
  while (n--) r32 = _mm_crc32_u8(r32, *p++);
  return r32;
}

// Three independent dependency chains hide the instruction's 3-cycle
// latency; the partial CRCs are joined with ShiftBytes (a few hundred ns),
// so this only pays off above a few KiB.
constexpr size_t kInterleaveMin = 3 * 1024;

__attribute__((target("sse4.2"))) uint32_t RawHardware(uint32_t r, const uint8_t* p, size_t n) {
  if (n < kInterleaveMin) return RawSingle(r, p, n);
  const size_t block = (n / 3) & ~size_t{7};
  const uint8_t* pa = p;
  const uint8_t* pb = p + block;
  const uint8_t* pc = p + 2 * block;
  uint64_t a = r, b = 0, c = 0;
  for (size_t i = 0; i < block; i += 8) {
    uint64_t wa, wb, wc;
    std::memcpy(&wa, pa + i, 8);
    std::memcpy(&wb, pb + i, 8);
    std::memcpy(&wc, pc + i, 8);
    a = _mm_crc32_u64(a, wa);
    b = _mm_crc32_u64(b, wb);
    c = _mm_crc32_u64(c, wc);
  }
  uint32_t out = ShiftBytes(static_cast<uint32_t>(a), block) ^ static_cast<uint32_t>(b);
  out = ShiftBytes(out, block) ^ static_cast<uint32_t>(c);
  return RawSingle(out, p + 3 * block, n - 3 * block);
}

// The copying form of RawHardware: each 64-byte piece of the three streams is
// loaded once into a vector register, stored to dst, and fed to the CRC from
// L1. Measured on this project's EPYC VM (docs/benchmarks.md): 256 KiB into a
// peer's shared memory in ~28 us, against ~50 us for memcpy then Crc32c.
__attribute__((target("sse4.2,avx512f"))) uint32_t RawCopyAvx512(uint32_t r, uint8_t* dst,
                                                                 const uint8_t* p, size_t n) {
  const size_t block = (n / 3) & ~size_t{63};
  const uint8_t* pa = p;
  const uint8_t* pb = p + block;
  const uint8_t* pc = p + 2 * block;
  uint8_t* da = dst;
  uint8_t* db = dst + block;
  uint8_t* dc = dst + 2 * block;
  uint64_t a = r, b = 0, c = 0;
  for (size_t i = 0; i < block; i += 64) {
    _mm512_storeu_si512(da + i, _mm512_loadu_si512(pa + i));
    _mm512_storeu_si512(db + i, _mm512_loadu_si512(pb + i));
    _mm512_storeu_si512(dc + i, _mm512_loadu_si512(pc + i));
    for (size_t k = i; k < i + 64; k += 8) {
      uint64_t wa, wb, wc;
      std::memcpy(&wa, pa + k, 8);
      std::memcpy(&wb, pb + k, 8);
      std::memcpy(&wc, pc + k, 8);
      a = _mm_crc32_u64(a, wa);
      b = _mm_crc32_u64(b, wb);
      c = _mm_crc32_u64(c, wc);
    }
  }
  uint32_t out = ShiftBytes(static_cast<uint32_t>(a), block) ^ static_cast<uint32_t>(b);
  out = ShiftBytes(out, block) ^ static_cast<uint32_t>(c);
  std::memcpy(dst + 3 * block, p + 3 * block, n - 3 * block);
  return RawSingle(out, p + 3 * block, n - 3 * block);
}

const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
const bool kHaveAvx512 = kHaveSse42 && __builtin_cpu_supports("avx512f");

}  // namespace

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t r = ~crc;
  r = kHaveSse42 ? RawHardware(r, p, n) : RawSoftware(r, p, n);
  return ~r;
}

uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

uint32_t Crc32cCopy(void* dst, const void* src, size_t n) {
  if (!kHaveAvx512 || n < kInterleaveMin) {
    std::memcpy(dst, src, n);
    return Crc32c(src, n);
  }
  return ~RawCopyAvx512(~0u, static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), n);
}

}  // namespace crescent
