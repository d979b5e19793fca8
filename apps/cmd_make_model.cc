// `crescent make-model`: a random-weight checkpoint of a real model's shape
// in the Hugging Face layout, with the real Qwen3 tokenizer files beside it.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "apps/command.h"
#include "model/make_model.h"

namespace crescent::apps {
namespace {

namespace fs = std::filesystem;

// Where scripts/setup puts the tokenizer, relative to a repository root.
constexpr const char* kTokenizerCache = ".cache/tokenizer-qwen3";

// --tokenizer-dir, else $CRESCENT_TOKENIZER_DIR, else .cache/tokenizer-qwen3
// under the working directory or any parent of the crescent binary (the
// binary lives in <repo>/build/apps). Empty when none holds tokenizer.json.
std::string FindTokenizerDir(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("CRESCENT_TOKENIZER_DIR")) return env;
  std::vector<fs::path> candidates = {fs::current_path() / kTokenizerCache};
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  for (fs::path p = exe.parent_path(); !ec && !p.empty() && p != p.root_path();
       p = p.parent_path()) {
    candidates.push_back(p / kTokenizerCache);
  }
  for (const fs::path& c : candidates) {
    if (fs::exists(c / "tokenizer.json")) return c.string();
  }
  return "";
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand(
      "make-model", "Write a random-weight checkpoint of a real model's shape (HF layout)");
  auto o = std::make_shared<model::MakeModelOptions>();
  auto tok = std::make_shared<std::string>();
  cmd->add_option("--shape", o->shape, "qwen3-0.6b | llama3.2-1b | qwen2.5-0.5b | tiny")
      ->required();
  cmd->add_option("--out", o->out_dir, "Output directory (created)")->required();
  cmd->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  cmd->add_option("--tokenizer-dir", *tok,
                  "Directory with tokenizer.json + tokenizer_config.json to copy "
                  "(default: .cache/tokenizer-qwen3 of the repository)");
  cmd->callback([o, tok] {
    o->tokenizer_dir = FindTokenizerDir(*tok);
    ExitWith(model::MakeModel(*o));
    std::fprintf(stderr, "make-model: wrote %s (%s)%s\n", o->out_dir.c_str(), o->shape.c_str(),
                 o->tokenizer_dir.empty() ? "; no tokenizer files found (run scripts/setup or pass "
                                            "--tokenizer-dir)"
                                          : (", tokenizer from " + o->tokenizer_dir).c_str());
  });
}

CRESCENT_REGISTER_COMMAND(make_model, Setup);

}  // namespace
}  // namespace crescent::apps
