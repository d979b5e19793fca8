// Logging: spdlog, configured once per process.
//
// Components log through spdlog's default logger (spdlog::info(...)).
// Level comes from --log-level or the CRESCENT_LOG env var (trace, debug,
// info, warn, error, off); default info. Logs go to stderr so that stdout
// stays for a command's own output.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace crescent {

// Idempotent; safe to call from main() before any thread starts.
// `level` empty means: CRESCENT_LOG or "info".
void InitLogging(std::string_view level = {});

}  // namespace crescent
