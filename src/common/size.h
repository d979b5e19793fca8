// Human-readable sizes, as mooncake.json and the CLI accept them.
//
// Accepted: plain bytes ("3355443200"), or a number (may be fractional) with
// a unit: B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB (case-insensitive,
// optional space). Following Mooncake, "GB" and "GiB" both mean 1024^3
// bytes, so "3.125GB" == 3355443200.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace crescent {

// Errors name the text and the accepted forms.
StatusOr<uint64_t> ParseSize(std::string_view text);

// 3355443200 -> "3.12 GiB"; 512 -> "512 B".
std::string FormatSize(uint64_t bytes);

}  // namespace crescent
