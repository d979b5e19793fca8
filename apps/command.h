// Subcommand registry for the `crescent` binary.
//
// Each subcommand lives in its own apps/cmd_<name>.cc and registers itself:
//
//   static void Setup(CLI::App& root) {
//     auto* cmd = root.add_subcommand("generate", "Greedy generation from token ids");
//     auto opts = std::make_shared<Options>();
//     cmd->add_option("--model", opts->model, "...")->required();
//     cmd->callback([opts] { ExitWith(RunGenerate(*opts)); });
//   }
//   CRESCENT_REGISTER_COMMAND(generate, Setup);
//
// apps/*.cc are compiled straight into the executable (not a static
// library), so the registrars are never dropped by the linker.
#pragma once

#include <CLI/CLI.hpp>

#include "common/status.h"

namespace crescent::apps {

using CommandSetup = void (*)(CLI::App& root);

struct CommandRegistrar {
  CommandRegistrar(const char* name, CommandSetup setup);
};

// Ends the subcommand: prints a non-OK status as "crescent: error: ..." and
// exits with status 1 (2 for invalid arguments); returns for OK.
void ExitWith(const Status& status);
// Exit with a plain code (0 returns).
void ExitWith(int code);

}  // namespace crescent::apps

#define CRESCENT_REGISTER_COMMAND(name, setup) \
  static ::crescent::apps::CommandRegistrar crescent_cmd_registrar_##name(#name, setup)
