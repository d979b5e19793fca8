// crescent: one binary, every role (master, serve, proxy, up, bench, tools).
#include <cstdio>
#include <map>
#include <string>

#include "apps/command.h"
#include "common/logging.h"

namespace crescent::apps {
namespace {
std::map<std::string, CommandSetup>& Registry() {
  static std::map<std::string, CommandSetup> r;
  return r;
}
}  // namespace

CommandRegistrar::CommandRegistrar(const char* name, CommandSetup setup) {
  Registry()[name] = setup;
}

void ExitWith(const Status& status) {
  if (status.ok()) return;
  std::fprintf(stderr, "crescent: error: %s\n", status.ToString().c_str());
  throw CLI::RuntimeError(status.code() == StatusCode::kInvalidArgument ? 2 : 1);
}

void ExitWith(int code) {
  if (code != 0) throw CLI::RuntimeError(code);
}

}  // namespace crescent::apps

int main(int argc, char** argv) {
  CLI::App app{"crescent: disaggregated LLM serving (prefill/decode split over a shared KV store)"};
  app.require_subcommand(1);
  std::string log_level;
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off (env CRESCENT_LOG)");
  app.parse_complete_callback([&] { crescent::InitLogging(log_level); });
  for (auto& [name, setup] : crescent::apps::Registry()) setup(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
