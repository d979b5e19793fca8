#include "common/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <string>

namespace crescent {

void InitLogging(std::string_view level) {
  std::string lv(level);
  if (lv.empty()) {
    const char* env = std::getenv("CRESCENT_LOG");
    lv = env ? env : "info";
  }
  static bool installed = false;
  if (!installed) {
    auto logger = spdlog::stderr_color_mt("crescent");
    spdlog::set_default_logger(logger);
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%L%$ [%P] %v");
    installed = true;
  }
  spdlog::set_level(spdlog::level::from_str(lv));
}

}  // namespace crescent
