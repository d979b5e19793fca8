// Helpers shared by http_server.cc and http_client.cc; not a public API.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/http.h"

namespace crescent::http::internal {

Method ParseMethod(std::string_view name);
// "a=1&b=x%2Fy" -> {{"a","1"},{"b","x/y"}}
std::vector<std::pair<std::string, std::string>> ParseQuery(std::string_view query);
std::string Lower(std::string_view s);

}  // namespace crescent::http::internal
