// `crescent tokenize --model DIR --text T`: prints the token ids of T, one
// line, space separated (what Hugging Face's encode returns).
#include <cstdio>
#include <memory>
#include <string>

#include "apps/command.h"
#include "model/tokenizer/tokenizer.h"

namespace crescent::apps {
namespace {

struct TokenizeOptions {
  std::string model;
  std::string text;
  bool add_special_tokens = false;
  bool decode = false;
};

Status RunTokenize(const TokenizeOptions& opts) {
  ASSIGN_OR_RETURN(auto tok, Tokenizer::Load(opts.model));
  const auto ids = tok->Encode(opts.text, opts.add_special_tokens);
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(ids[i]);
  }
  std::printf("%s\n", line.c_str());
  if (opts.decode) std::printf("%s\n", tok->Decode(ids).c_str());
  return OkStatus();
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("tokenize", "Print the token ids of a text (Hugging Face tokenizer.json)");
  auto opts = std::make_shared<TokenizeOptions>();
  cmd->add_option("--model", opts->model, "Model directory with tokenizer.json")->required();
  cmd->add_option("--text", opts->text, "Text to encode")->required();
  cmd->add_flag("--add-special-tokens", opts->add_special_tokens,
                "Add what the post-processor adds (e.g. Llama 3's <|begin_of_text|>)");
  cmd->add_flag("--decode", opts->decode, "Also print the decoded ids on a second line");
  cmd->callback([opts] { ExitWith(RunTokenize(*opts)); });
}

}  // namespace
CRESCENT_REGISTER_COMMAND(tokenize, Setup);
}  // namespace crescent::apps
