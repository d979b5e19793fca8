// CRC-32C (Castagnoli), the checksum every stored object carries.
//
// The standard CRC-32C of RFC 3720 (iSCSI): reflected polynomial 0x82F63B78,
// initial value 0xFFFFFFFF, final xor 0xFFFFFFFF; Crc32c("123456789") ==
// 0xE3069283. Folds with carry-less multiplies (VPCLMULQDQ, ~27 GB/s here)
// from 512 bytes on CPUs that have them, else runs the SSE4.2 crc32
// instruction over three interleaved streams, else a table.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace crescent {

// CRC-32C of data[0, n).
uint32_t Crc32c(const void* data, size_t n);

// Continues a CRC-32C: Crc32cExtend(Crc32c(a), b) == Crc32c(a || b).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

// Copies src[0, n) to dst (the ranges must not overlap) and returns
// Crc32c(src, n), reading src once. With VPCLMULQDQ (AVX-512) this costs
// about what the copy alone does; elsewhere it is memcpy then Crc32c.
uint32_t Crc32cCopy(void* dst, const void* src, size_t n);

// The implementations, for tests that must cover each one the CPU has (the
// functions above pick the fastest): a byte table, the SSE4.2 crc32
// instruction over three interleaved streams, and folding with VPCLMULQDQ.
enum class Crc32cPath { kTable, kSse42, kFold };
std::vector<Crc32cPath> Crc32cPathsOnThisCpu();
uint32_t Crc32cExtendWith(Crc32cPath path, uint32_t crc, const void* data, size_t n);
uint32_t Crc32cCopyWith(Crc32cPath path, void* dst, const void* src, size_t n);

}  // namespace crescent
