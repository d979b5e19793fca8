// Base64 (RFC 4648, with padding) for etcd's JSON gateway and the HTTP
// service's list replies. Internal to the metadata backends.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace crescent::transfer {

std::string Base64Encode(std::string_view bytes);
// INVALID_ARGUMENT on characters outside the alphabet or bad padding.
StatusOr<std::string> Base64Decode(std::string_view text);

}  // namespace crescent::transfer
