// `crescent chat-template --model DIR --messages JSON [--tools JSON]
// [--kwargs JSON] [--no-generation-prompt] [--ids]`: prints the prompt the
// model's chat template renders (transformers' apply_chat_template with
// tokenize=False), or its token ids with --ids.
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "apps/command.h"
#include "model/tokenizer/chat_template.h"
#include "model/tokenizer/tokenizer.h"

namespace crescent::apps {
namespace {

struct ChatTemplateOptions {
  std::string model;
  std::string messages;
  std::string tools;
  std::string kwargs;
  bool no_generation_prompt = false;
  bool ids = false;
};

StatusOr<nlohmann::ordered_json> ParseArg(const std::string& text, const char* flag) {
  if (text.empty()) return nlohmann::ordered_json();
  auto j = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgumentError(std::string(flag) + " is not valid JSON: " + text);
  return j;
}

Status RunChatTemplate(const ChatTemplateOptions& opts) {
  ASSIGN_OR_RETURN(auto messages, ParseArg(opts.messages, "--messages"));
  ASSIGN_OR_RETURN(auto tools, ParseArg(opts.tools, "--tools"));
  ASSIGN_OR_RETURN(auto kwargs, ParseArg(opts.kwargs, "--kwargs"));
  if (!messages.is_array()) return InvalidArgumentError("--messages must be a JSON list of {role, content}");
  if (!kwargs.is_null() && !kwargs.is_object()) return InvalidArgumentError("--kwargs must be a JSON object");
  // transformers takes add_generation_prompt as a keyword too; accept it there.
  bool add_generation_prompt = !opts.no_generation_prompt;
  if (kwargs.is_object() && kwargs.contains("add_generation_prompt")) {
    add_generation_prompt = kwargs["add_generation_prompt"].is_boolean() && kwargs["add_generation_prompt"].get<bool>();
    kwargs.erase("add_generation_prompt");
  }
  ASSIGN_OR_RETURN(auto tok, Tokenizer::Load(opts.model));
  ASSIGN_OR_RETURN(auto tmpl, ChatTemplate::FromTokenizer(*tok));
  ASSIGN_OR_RETURN(std::string prompt, tmpl->Render(messages, tools, add_generation_prompt, kwargs));
  if (opts.ids) {
    std::string line;
    for (int32_t id : tok->Encode(prompt)) line += (line.empty() ? "" : " ") + std::to_string(id);
    std::printf("%s\n", line.c_str());
  } else {
    std::fwrite(prompt.data(), 1, prompt.size(), stdout);
  }
  return OkStatus();
}

void Setup(CLI::App& root) {
  auto* cmd = root.add_subcommand("chat-template", "Render a model's chat template for a list of messages");
  auto opts = std::make_shared<ChatTemplateOptions>();
  cmd->add_option("--model", opts->model, "Model directory with tokenizer.json and tokenizer_config.json")->required();
  cmd->add_option("--messages", opts->messages, "JSON list of messages, e.g. '[{\"role\":\"user\",\"content\":\"hi\"}]'")
      ->required();
  cmd->add_option("--tools", opts->tools, "JSON list of tool schemas");
  cmd->add_option("--kwargs", opts->kwargs,
                  "JSON object of extra template variables, e.g. '{\"enable_thinking\": false}'");
  cmd->add_flag("--no-generation-prompt", opts->no_generation_prompt,
                "Do not append the assistant turn header (add_generation_prompt=false)");
  cmd->add_flag("--ids", opts->ids, "Print the token ids of the rendered prompt instead of the text");
  cmd->callback([opts] { ExitWith(RunChatTemplate(*opts)); });
}

}  // namespace
CRESCENT_REGISTER_COMMAND(chat_template, Setup);
}  // namespace crescent::apps
