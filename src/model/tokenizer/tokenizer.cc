#include "model/tokenizer/tokenizer.h"

#include <algorithm>
#include <deque>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "common/config.h"
#include "model/tokenizer/added_vocab.h"
#include "model/tokenizer/bpe.h"
#include "model/tokenizer/byte_level.h"
#include "model/tokenizer/pre_tokenizer.h"
#include "model/tokenizer/json_util.h"
#include "model/tokenizer/utf8.h"

namespace crescent {

using json = nlohmann::json;
using namespace tokenizer;  // NOLINT: this file implements the pipeline

struct Tokenizer::Impl {
  // All constant after FromJson.
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> bpe;
  AddedTokenMatcher raw_added;         // normalized=false: matched on the raw text
  AddedTokenMatcher normalized_added;  // normalized=true: matched after normalization
  std::unordered_map<std::string, int32_t> token_to_id;
  std::vector<std::string> id_to_token;  // [id]
  std::vector<std::string> id_to_bytes;  // [id] what the ByteLevel decoder yields
  std::vector<bool> is_special;          // [id]
  std::vector<int32_t> special_ids;
  std::vector<int32_t> prefix_ids, suffix_ids;  // post-processor template around the text
  std::vector<int32_t> eos_ids;
  std::optional<int32_t> bos_id, pad_id;
  std::string bos_token, eos_token, pad_token, unk_token, chat_template;
  bool add_bos_token = false;

  void EncodePlain(std::string_view text, std::vector<int32_t>* out) const;
};

namespace {

// tokenizer_config writes a token as "<s>" or {"content": "<s>", ...}.
std::string TokenString(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return "";
}

// Ids the post-processor puts before (prefix) and after (suffix) the text.
Status ParsePostProcessor(const json& spec, const std::unordered_map<std::string, int32_t>& vocab,
                          std::vector<int32_t>* prefix, std::vector<int32_t>* suffix) {
  if (spec.is_null()) return OkStatus();
  const std::string type = JsonString(spec, "type");
  if (type == "ByteLevel") return OkStatus();  // only trims offsets; ids unchanged
  if (type == "Sequence") {
    for (const auto& p : JsonField(spec, "processors")) {
      RETURN_IF_ERROR(ParsePostProcessor(p, vocab, prefix, suffix));
    }
    return OkStatus();
  }
  if (type != "TemplateProcessing") {
    return UnimplementedError("post_processor type '" + type +
                              "' is not supported (ByteLevel, TemplateProcessing, Sequence are)");
  }
  bool seen_sequence = false;
  for (const auto& piece : JsonField(spec, "single")) {
    if (piece.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    const std::string name = JsonString(JsonField(piece, "SpecialToken"), "id");
    const json& specials = JsonField(spec, "special_tokens");
    std::vector<int32_t> ids;
    if (specials.contains(name) && specials[name].contains("ids")) {
      ids = specials[name]["ids"].get<std::vector<int32_t>>();
    } else if (auto it = vocab.find(name); it != vocab.end()) {
      ids = {it->second};
    } else {
      return InvalidArgumentError("post_processor: special token '" + name + "' has no id");
    }
    auto* dst = seen_sequence ? suffix : prefix;
    dst->insert(dst->end(), ids.begin(), ids.end());
  }
  return OkStatus();
}

StatusOr<json> ParseJson(std::string_view text, std::string_view what) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return InvalidArgumentError(std::string(what) + " is not valid JSON");
  return j;
}

}  // namespace

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view tokenizer_json,
                                                         std::string_view config_json,
                                                         std::string_view generation_config_json,
                                                         const TokenizerOptions& options) {
  // Field types are checked where it matters; a value of a wrong type deeper
  // down surfaces as nlohmann's exception, turned into an error here.
  try {
    return FromJsonUnchecked(tokenizer_json, config_json, generation_config_json, options);
  } catch (const json::exception& e) {
    return InvalidArgumentError(std::string("tokenizer files have an unexpected field type: ") + e.what());
  }
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJsonUnchecked(std::string_view tokenizer_json,
                                                                  std::string_view config_json,
                                                                  std::string_view generation_config_json,
                                                                  const TokenizerOptions& options) {
  ASSIGN_OR_RETURN(json tj, ParseJson(tokenizer_json, "tokenizer.json"));
  auto impl = std::make_unique<Impl>();
  if (!tj.is_object() || !tj.contains("model") || !tj["model"].is_object()) {
    return InvalidArgumentError("tokenizer.json has no \"model\" object");
  }
  const json& model = tj["model"];
  if (JsonString(model, "type", "BPE") != "BPE") {
    return UnimplementedError("tokenizer.json model.type '" + JsonString(model, "type") +
                              "' is not supported (only BPE)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model[key].is_string() && !model[key].get<std::string>().empty()) {
      return UnimplementedError(std::string("tokenizer.json model.") + key + " is not supported");
    }
  }
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return InvalidArgumentError("tokenizer.json model.vocab must be an object token -> id");
  }
  int32_t max_id = -1;
  for (const auto& [token, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 30)) {
      return InvalidArgumentError("tokenizer.json model.vocab['" + token + "'] is not a valid id");
    }
    impl->token_to_id[token] = id.get<int32_t>();
    max_id = std::max(max_id, id.get<int32_t>());
  }
  std::vector<std::pair<std::string, std::string>> merges;
  for (const auto& m : JsonField(model, "merges")) {
    if (m.is_string()) {  // "a b" (older files)
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ', 1);
      if (sp == std::string::npos) return InvalidArgumentError("tokenizer.json merge '" + s + "' has no space");
      merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return InvalidArgumentError("tokenizer.json model.merges entries must be \"a b\" or [a, b]");
    }
  }
  BpeOptions bpe_options;
  bpe_options.ignore_merges = JsonBool(model, "ignore_merges", false);
  bpe_options.cache_words = options.word_cache_capacity;
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    auto it = impl->token_to_id.find(model["unk_token"].get<std::string>());
    if (it != impl->token_to_id.end()) bpe_options.unk_id = it->second;
  }
  std::string error;
  impl->bpe = BpeModel::Create(impl->token_to_id, merges, bpe_options, &error);
  if (!impl->bpe) return InvalidArgumentError("tokenizer.json: " + error);

  // Added tokens override the model vocab for their ids.
  std::vector<AddedToken> raw, normalized;
  std::vector<AddedToken> all;
  for (const auto& t : JsonField(tj, "added_tokens")) {
    AddedToken a;
    if (!t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
        !t["content"].is_string()) {
      return InvalidArgumentError("tokenizer.json added_tokens entries need integer id and string content");
    }
    a.id = t["id"].get<int32_t>();
    if (a.id < 0 || a.id > (1 << 30)) return InvalidArgumentError("tokenizer.json added token id out of range");
    a.content = t["content"].get<std::string>();
    a.single_word = JsonBool(t, "single_word", false);
    a.lstrip = JsonBool(t, "lstrip", false);
    a.rstrip = JsonBool(t, "rstrip", false);
    a.normalized = JsonBool(t, "normalized", false);
    a.special = JsonBool(t, "special", false);
    max_id = std::max(max_id, a.id);
    impl->token_to_id[a.content] = a.id;
    (a.normalized ? normalized : raw).push_back(a);
    all.push_back(std::move(a));
  }
  const size_t n = static_cast<size_t>(max_id + 1);
  impl->id_to_token.assign(n, "");
  impl->id_to_bytes.assign(n, "");
  impl->is_special.assign(n, false);
  for (const auto& [token, id] : model["vocab"].items()) impl->id_to_token[id.get<int32_t>()] = token;
  for (const auto& a : all) {
    impl->id_to_token[a.id] = a.content;
    if (a.special && !impl->is_special[a.id]) {
      impl->is_special[a.id] = true;
      impl->special_ids.push_back(a.id);
    }
  }
  std::sort(impl->special_ids.begin(), impl->special_ids.end());
  for (size_t id = 0; id < n; ++id) impl->id_to_bytes[id] = TokenToBytes(impl->id_to_token[id]);
  impl->raw_added = AddedTokenMatcher(std::move(raw));
  impl->normalized_added = AddedTokenMatcher(std::move(normalized));

  ASSIGN_OR_RETURN(impl->normalizer, Normalizer::Create(JsonField(tj, "normalizer")));
  ASSIGN_OR_RETURN(impl->pre_tokenizer, PreTokenizer::Create(JsonField(tj, "pre_tokenizer")));
  const json decoder = JsonField(tj, "decoder");
  if (!decoder.is_null() && JsonString(decoder, "type") != "ByteLevel") {
    return UnimplementedError("tokenizer.json decoder type '" + JsonString(decoder, "type") +
                              "' is not supported (ByteLevel is)");
  }
  RETURN_IF_ERROR(ParsePostProcessor(JsonField(tj, "post_processor"), impl->token_to_id,
                                     &impl->prefix_ids, &impl->suffix_ids));

  if (!config_json.empty()) {
    ASSIGN_OR_RETURN(json cfg, ParseJson(config_json, "tokenizer_config.json"));
    impl->bos_token = TokenString(JsonField(cfg, "bos_token"));
    impl->eos_token = TokenString(JsonField(cfg, "eos_token"));
    impl->pad_token = TokenString(JsonField(cfg, "pad_token"));
    impl->unk_token = TokenString(JsonField(cfg, "unk_token"));
    impl->add_bos_token = JsonBool(cfg, "add_bos_token", false);
    const json tmpl = JsonField(cfg, "chat_template");
    if (tmpl.is_string()) {
      impl->chat_template = tmpl.get<std::string>();
    } else if (tmpl.is_array()) {
      for (const auto& t : tmpl) {
        if (JsonString(t, "name") == "default" && t.contains("template")) impl->chat_template = t["template"];
      }
    }
  }
  auto lookup = [&](const std::string& tok) -> std::optional<int32_t> {
    if (tok.empty()) return std::nullopt;
    auto it = impl->token_to_id.find(tok);
    return it == impl->token_to_id.end() ? std::nullopt : std::optional<int32_t>(it->second);
  };
  impl->bos_id = lookup(impl->bos_token);
  impl->pad_id = lookup(impl->pad_token);
  if (auto eos = lookup(impl->eos_token)) impl->eos_ids.push_back(*eos);
  if (!generation_config_json.empty()) {
    ASSIGN_OR_RETURN(json gc, ParseJson(generation_config_json, "generation_config.json"));
    json e = JsonField(gc, "eos_token_id");
    if (e.is_number_integer()) e = json::array({e});
    for (const auto& id : e.is_array() ? e : json::array()) {
      if (id.is_number_integer() &&
          std::find(impl->eos_ids.begin(), impl->eos_ids.end(), id.get<int32_t>()) == impl->eos_ids.end()) {
        impl->eos_ids.push_back(id.get<int32_t>());
      }
    }
  }
  // tokenizer_config's add_bos_token applies when the post-processor does not
  // already add tokens (Llama 2 style configs).
  if (impl->add_bos_token && impl->prefix_ids.empty() && impl->bos_id) impl->prefix_ids = {*impl->bos_id};
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(std::string_view model_dir,
                                                     const TokenizerOptions& options) {
  const std::string dir(model_dir);
  auto tok = ReadFile(dir + "/tokenizer.json");
  if (!tok.ok()) {
    return Status(tok.status().code(), "cannot read tokenizer: " + tok.status().message() +
                                           " (is --model a Hugging Face model directory?)");
  }
  std::string cfg = ReadFile(dir + "/tokenizer_config.json").value_or("");
  std::string gen = ReadFile(dir + "/generation_config.json").value_or("");
  auto result = FromJson(*tok, cfg, gen, options);
  if (!result.ok()) return result.status().WithContext(dir);
  return result;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

void Tokenizer::Impl::EncodePlain(std::string_view text, std::vector<int32_t>* out) const {
  std::string normalized_storage;
  std::string_view normalized = text;
  if (!normalizer->IsIdentity()) {
    normalized_storage = normalizer->Normalize(text);
    normalized = normalized_storage;
  }
  std::vector<AddedSplit> splits;
  normalized_added.Split(normalized, &splits);
  std::deque<std::string> storage;
  std::vector<std::string_view> pieces;
  for (const AddedSplit& s : splits) {
    if (s.id >= 0) {
      out->push_back(s.id);
      continue;
    }
    pieces.clear();
    pre_tokenizer->Split(normalized.substr(s.begin, s.end - s.begin), &storage, &pieces);
    for (std::string_view p : pieces) bpe->EncodeWord(p, out);
  }
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = impl_->prefix_ids;
  std::vector<AddedSplit> splits;
  impl_->raw_added.Split(text, &splits);
  for (const AddedSplit& s : splits) {
    if (s.id >= 0) {
      ids.push_back(s.id);
    } else {
      impl_->EncodePlain(text.substr(s.begin, s.end - s.begin), &ids);
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), impl_->suffix_ids.begin(), impl_->suffix_ids.end());
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    if (id < 0 || id >= VocabSize()) continue;
    if (skip_special_tokens && impl_->is_special[id]) continue;
    bytes += impl_->id_to_bytes[id];
  }
  std::string out;
  out.reserve(bytes.size());
  AppendLossyUtf8(bytes, /*final=*/true, &out);
  return out;
}

std::string_view Tokenizer::TokenBytes(int32_t id) const {
  return id >= 0 && id < VocabSize() ? std::string_view(impl_->id_to_bytes[id]) : std::string_view();
}

int32_t Tokenizer::VocabSize() const { return static_cast<int32_t>(impl_->id_to_token.size()); }

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  auto it = impl_->token_to_id.find(std::string(token));
  if (it == impl_->token_to_id.end()) return std::nullopt;
  return it->second;
}

std::string_view Tokenizer::IdToToken(int32_t id) const {
  return id >= 0 && id < VocabSize() ? std::string_view(impl_->id_to_token[id]) : std::string_view();
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < VocabSize() && impl_->is_special[id];
}
const std::vector<int32_t>& Tokenizer::SpecialTokenIds() const { return impl_->special_ids; }
const std::vector<int32_t>& Tokenizer::EosTokenIds() const { return impl_->eos_ids; }
std::optional<int32_t> Tokenizer::BosTokenId() const { return impl_->bos_id; }
std::optional<int32_t> Tokenizer::PadTokenId() const { return impl_->pad_id; }
const std::string& Tokenizer::BosToken() const { return impl_->bos_token; }
const std::string& Tokenizer::EosToken() const { return impl_->eos_token; }
const std::string& Tokenizer::PadToken() const { return impl_->pad_token; }
const std::string& Tokenizer::UnkToken() const { return impl_->unk_token; }
bool Tokenizer::AddBosToken() const { return impl_->add_bos_token; }
const std::string& Tokenizer::ChatTemplateSource() const { return impl_->chat_template; }

}  // namespace crescent
