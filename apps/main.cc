// crescent: one binary, every role (master, serve, proxy, up, bench, tools).
#include <cstdio>
#include <map>
#include <string>
#include <vector>

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
  app.name("crescent");
  for (auto& [name, setup] : crescent::apps::Registry()) setup(app);
  // vLLM's "-tp N" is a two-letter short option, which CLI11 cannot declare.
  std::vector<std::string> args;
  for (int i = argc - 1; i >= 1; --i)  // CLI11 takes the arguments reversed
    args.push_back(std::string(argv[i]) == "-tp" ? "--tensor-parallel-size" : argv[i]);
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
