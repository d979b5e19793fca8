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

// ---- folding with carry-less multiplies (VPCLMULQDQ) ----
//
// The message is cut into 128-bit lanes; a lane d bits before the end of a
// window is congruent, modulo P, to lo64 * x^(d+32) + hi64 * x^(d-32) in the
// window's last lane (the reflected layout of the classic "Fast CRC
// computation using PCLMULQDQ" paper). Four 512-bit registers hold 16 lanes;
// each step folds them 2048 bits ahead onto the next 256 bytes. What is left
// at the end is one 128-bit value with the message's CRC, which the crc32
// instruction then reads as 16 bytes. The constants are computed here, not
// copied: key(d) = x^d mod P, reflected, shifted left by one.

uint64_t FoldKey(size_t bits) { return uint64_t{X2NModP(bits, 0)} << 1; }

struct FoldKeys {
  // {low lane multiplier, high lane multiplier} for a fold across `bits`.
  uint64_t lo[4], hi[4];  // 2048, 1536, 1024, 512 bits
  uint64_t lane_lo[3], lane_hi[3];  // 128, 256, 384 bits
  FoldKeys() {
    const size_t bits[4] = {2048, 1536, 1024, 512};
    for (int i = 0; i < 4; ++i) {
      lo[i] = FoldKey(bits[i] + 32);
      hi[i] = FoldKey(bits[i] - 32);
    }
    for (int i = 0; i < 3; ++i) {
      lane_lo[i] = FoldKey(128 * (i + 1) + 32);
      lane_hi[i] = FoldKey(128 * (i + 1) - 32);
    }
  }
};
const FoldKeys kFold;

constexpr size_t kFoldMin = 512;

// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*()
// and -Wall then warns inside the header; the values are all defined.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define CRESCENT_FOLD_TARGET __attribute__((target("sse4.2,pclmul,avx512f,vpclmulqdq")))

CRESCENT_FOLD_TARGET inline __m512i Keys512(int i) {
  return _mm512_broadcast_i32x4(_mm_set_epi64x(static_cast<int64_t>(kFold.hi[i]),
                                               static_cast<int64_t>(kFold.lo[i])));
}

// x folded onto `onto`: onto ^ lo(x) * lo(k) ^ hi(x) * hi(k), per lane.
CRESCENT_FOLD_TARGET inline __m512i Fold(__m512i x, __m512i k, __m512i onto) {
  return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00),
                                   _mm512_clmulepi64_epi128(x, k, 0x11), onto, 0x96);
}

CRESCENT_FOLD_TARGET inline __m128i FoldLane(__m128i x, int i, __m128i onto) {
  const __m128i k = _mm_set_epi64x(static_cast<int64_t>(kFold.lane_hi[i]),
                                   static_cast<int64_t>(kFold.lane_lo[i]));
  return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00),
                                     _mm_clmulepi64_si128(x, k, 0x11)),
                       onto);
}

template <bool kCopy>
CRESCENT_FOLD_TARGET inline __m512i LoadAndCopy(const uint8_t* p, uint8_t* dst, size_t at) {
  const __m512i v = _mm512_loadu_si512(p + at);
  if constexpr (kCopy) _mm512_storeu_si512(dst + at, v);
  return v;
}

// Raw CRC of p[0, n), n >= 256; with kCopy also copies p to dst in the same
// pass (each 64 bytes are loaded once, stored, and folded).
template <bool kCopy>
CRESCENT_FOLD_TARGET uint32_t RawFold(uint32_t r, uint8_t* dst, const uint8_t* p, size_t n) {
  // The register's initial value enters as an xor into the first 4 bytes.
  const __m512i init =
      _mm512_inserti32x4(_mm512_setzero_si512(), _mm_cvtsi32_si128(static_cast<int>(r)), 0);
  __m512i x0 = _mm512_xor_si512(LoadAndCopy<kCopy>(p, dst, 0), init);
  __m512i x1 = LoadAndCopy<kCopy>(p, dst, 64);
  __m512i x2 = LoadAndCopy<kCopy>(p, dst, 128);
  __m512i x3 = LoadAndCopy<kCopy>(p, dst, 192);
  const __m512i k = Keys512(0);
  size_t at = 256;
  for (; at + 256 <= n; at += 256) {
    x0 = Fold(x0, k, LoadAndCopy<kCopy>(p, dst, at));
    x1 = Fold(x1, k, LoadAndCopy<kCopy>(p, dst, at + 64));
    x2 = Fold(x2, k, LoadAndCopy<kCopy>(p, dst, at + 128));
    x3 = Fold(x3, k, LoadAndCopy<kCopy>(p, dst, at + 192));
  }
  x3 = Fold(x2, Keys512(3), x3);
  x3 = Fold(x1, Keys512(2), x3);
  x3 = Fold(x0, Keys512(1), x3);
  __m128i v = _mm512_extracti32x4_epi32(x3, 3);
  v = FoldLane(_mm512_extracti32x4_epi32(x3, 2), 0, v);
  v = FoldLane(_mm512_extracti32x4_epi32(x3, 1), 1, v);
  v = FoldLane(_mm512_extracti32x4_epi32(x3, 0), 2, v);
  uint64_t c = _mm_crc32_u64(0, static_cast<uint64_t>(_mm_cvtsi128_si64(v)));
  c = _mm_crc32_u64(c, static_cast<uint64_t>(_mm_extract_epi64(v, 1)));
  if constexpr (kCopy) std::memcpy(dst + at, p + at, n - at);
  return RawSingle(static_cast<uint32_t>(c), p + at, n - at);
}

const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
const bool kHaveFold = kHaveSse42 && __builtin_cpu_supports("avx512f") &&
                       __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("vpclmulqdq");

Crc32cPath Best(size_t n) {
  if (kHaveFold && n >= kFoldMin) return Crc32cPath::kFold;
  return kHaveSse42 ? Crc32cPath::kSse42 : Crc32cPath::kTable;
}

}  // namespace

std::vector<Crc32cPath> Crc32cPathsOnThisCpu() {
  std::vector<Crc32cPath> out{Crc32cPath::kTable};
  if (kHaveSse42) out.push_back(Crc32cPath::kSse42);
  if (kHaveFold) out.push_back(Crc32cPath::kFold);
  return out;
}

uint32_t Crc32cExtendWith(Crc32cPath path, uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  const uint32_t r = ~crc;
  switch (path) {
    case Crc32cPath::kFold:
      if (n >= kFoldMin) return ~RawFold<false>(r, nullptr, p, n);
      [[fallthrough]];
    case Crc32cPath::kSse42:
      return ~RawHardware(r, p, n);
    case Crc32cPath::kTable:
      break;
  }
  return ~RawSoftware(r, p, n);
}

uint32_t Crc32cCopyWith(Crc32cPath path, void* dst, const void* src, size_t n) {
  if (path == Crc32cPath::kFold && n >= kFoldMin) {
    return ~RawFold<true>(~0u, static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), n);
  }
  std::memcpy(dst, src, n);
  return Crc32cExtendWith(path, 0, src, n);
}

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n) {
  return Crc32cExtendWith(Best(n), crc, data, n);
}

uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

uint32_t Crc32cCopy(void* dst, const void* src, size_t n) {
  return Crc32cCopyWith(Best(n), dst, src, n);
}

}  // namespace crescent
