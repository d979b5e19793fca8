// CRC-32C (Castagnoli), the checksum every stored object carries.
//
// The standard CRC-32C of RFC 3720 (iSCSI): reflected polynomial 0x82F63B78,
// initial value 0xFFFFFFFF, final xor 0xFFFFFFFF; Crc32c("123456789") ==
// 0xE3069283. Uses the SSE4.2 crc32 instruction over three interleaved
// streams when the CPU has it (about 8 bytes per cycle), a table otherwise.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace crescent {

// CRC-32C of data[0, n).
uint32_t Crc32c(const void* data, size_t n);

// Continues a CRC-32C: Crc32cExtend(Crc32c(a), b) == Crc32c(a || b).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

// Copies src[0, n) to dst (the ranges must not overlap) and returns
// Crc32c(src, n), reading src once. With AVX-512 this costs about what the
// copy alone does; elsewhere it is memcpy then Crc32c.
uint32_t Crc32cCopy(void* dst, const void* src, size_t n);

}  // namespace crescent
