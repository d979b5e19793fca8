#include "model/tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "model/tokenizer/json_util.h"
#include "model/tokenizer/utf8.h"

namespace crescent::tokenizer {
namespace {

using json = nlohmann::json;

// The GPT-2 regex that ByteLevel applies when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ---- normalizers -------------------------------------------------------------

class IdentityNormalizer : public Normalizer {
 public:
  std::string Normalize(std::string_view text) const override { return std::string(text); }
  bool IsIdentity() const override { return true; }
};

class NfcNormalizer : public Normalizer {
 public:
  std::string Normalize(std::string_view text) const override {
    // ASCII is NFC already; skip utf8proc's allocation for the common case.
    bool ascii = true;
    for (char c : text) ascii &= static_cast<unsigned char>(c) < 0x80;
    if (ascii) return std::string(text);
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(
        reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
        static_cast<utf8proc_ssize_t>(text.size()), &out,
        static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (n < 0) return std::string(text);  // invalid UTF-8: leave it to the byte level
    std::string result(reinterpret_cast<char*>(out), static_cast<size_t>(n));
    std::free(out);
    return result;
  }
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  std::string Normalize(std::string_view text) const override {
    std::string s(text);
    for (const auto& p : parts_) s = p->Normalize(s);
    return s;
  }
  bool IsIdentity() const override {
    for (const auto& p : parts_) {
      if (!p->IsIdentity()) return false;
    }
    return true;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

// ---- pre-tokenizer stages -----------------------------------------------------

// A compiled PCRE2 pattern. Match data and the JIT stack are per thread so
// that one Regex serves every request thread without locks.
class Regex {
 public:
  static StatusOr<std::unique_ptr<Regex>> Compile(const std::string& pattern) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(
        reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
        PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      return InvalidArgumentError("pre_tokenizer regex /" + pattern + "/ does not compile at offset " +
                                  std::to_string(offset) + ": " + reinterpret_cast<char*>(msg));
    }
    // JIT failing (e.g. unsupported CPU) only costs speed: the interpreter runs.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    return std::unique_ptr<Regex>(new Regex(code));
  }
  ~Regex() { pcre2_code_free(code_); }

  // Calls on_piece(begin, end, matched) for every match and every gap
  // between matches, in order, covering all of `text`.
  template <typename F>
  void ForEach(std::string_view text, F&& on_piece) const {
    thread_local struct ThreadState {
      pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
      pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
      pcre2_match_context* ctx = [this_stack = stack] {
        pcre2_match_context* c = pcre2_match_context_create(nullptr);
        pcre2_jit_stack_assign(c, nullptr, this_stack);
        return c;
      }();
      ~ThreadState() {
        pcre2_match_context_free(ctx);
        pcre2_jit_stack_free(stack);
        pcre2_match_data_free(md);
      }
    } ts;
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t pos = 0, gap = 0;
    while (pos < text.size()) {
      const int rc = pcre2_match(code_, subject, text.size(), pos, 0, ts.md, ts.ctx);
      if (rc < 0) break;  // no more matches (or a limit hit): the rest is a gap
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(ts.md);
      size_t begin = ov[0], end = ov[1];
      if (end <= begin) {  // empty match: HF skips it; step one character
        pos = begin + 1;
        while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
        continue;
      }
      if (begin > gap) on_piece(gap, begin, false);
      on_piece(begin, end, true);
      pos = gap = end;
    }
    if (gap < text.size()) on_piece(gap, text.size(), false);
  }

 private:
  explicit Regex(pcre2_code* code) : code_(code) {}
  pcre2_code* code_;
};

class Stage {
 public:
  virtual ~Stage() = default;
  virtual void Apply(std::vector<std::string_view>* pieces, std::deque<std::string>* storage) const = 0;
};

class SplitStage : public Stage {
 public:
  SplitStage(std::unique_ptr<Regex> re, bool keep_gaps, bool keep_matches)
      : re_(std::move(re)), keep_gaps_(keep_gaps), keep_matches_(keep_matches) {}
  void Apply(std::vector<std::string_view>* pieces, std::deque<std::string>*) const override {
    std::vector<std::string_view> out;
    out.reserve(pieces->size() * 4);
    for (std::string_view p : *pieces) {
      re_->ForEach(p, [&](size_t b, size_t e, bool matched) {
        if (matched ? keep_matches_ : keep_gaps_) out.push_back(p.substr(b, e - b));
      });
    }
    pieces->swap(out);
  }

 private:
  std::unique_ptr<Regex> re_;
  bool keep_gaps_, keep_matches_;
};

class PrefixSpaceStage : public Stage {
 public:
  void Apply(std::vector<std::string_view>* pieces, std::deque<std::string>* storage) const override {
    for (auto& p : *pieces) {
      if (!p.empty() && p[0] == ' ') continue;
      storage->push_back(" " + std::string(p));
      p = storage->back();
    }
  }
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<Stage>> stages)
      : stages_(std::move(stages)) {}
  void Split(std::string_view text, std::deque<std::string>* storage,
             std::vector<std::string_view>* pieces) const override {
    std::vector<std::string_view> local{text};
    for (const auto& s : stages_) s->Apply(&local, storage);
    for (auto p : local) {
      if (!p.empty()) pieces->push_back(p);
    }
  }

 private:
  std::vector<std::unique_ptr<Stage>> stages_;
};

Status AddStages(const json& spec, std::vector<std::unique_ptr<Stage>>* stages) {
  if (spec.is_null()) return OkStatus();
  const std::string type = JsonString(spec, "type");
  if (type == "Sequence") {
    for (const auto& p : JsonField(spec, "pretokenizers")) {
      RETURN_IF_ERROR(AddStages(p, stages));
    }
    return OkStatus();
  }
  if (type == "Split") {
    const json& pat = JsonField(spec, "pattern");
    std::string pattern;
    if (pat.contains("Regex")) {
      pattern = pat["Regex"].get<std::string>();
    } else if (pat.contains("String")) {
      // A literal string: quote it for PCRE2.
      pattern = "\\Q" + pat["String"].get<std::string>() + "\\E";
    } else {
      return InvalidArgumentError("pre_tokenizer Split needs pattern.Regex or pattern.String");
    }
    if (JsonBool(spec, "invert", false)) {
      return UnimplementedError("pre_tokenizer Split with invert=true is not supported");
    }
    const std::string behavior = JsonString(spec, "behavior", "Isolated");
    if (behavior != "Isolated" && behavior != "Removed") {
      return UnimplementedError("pre_tokenizer Split behavior '" + behavior +
                                "' is not supported (Isolated and Removed are)");
    }
    ASSIGN_OR_RETURN(auto re, Regex::Compile(pattern));
    stages->push_back(std::make_unique<SplitStage>(std::move(re), true, behavior == "Isolated"));
    return OkStatus();
  }
  if (type == "ByteLevel") {
    // The byte-to-character mapping itself happens in the BPE model, on bytes.
    if (JsonBool(spec, "add_prefix_space", false)) stages->push_back(std::make_unique<PrefixSpaceStage>());
    if (JsonBool(spec, "use_regex", true)) {
      ASSIGN_OR_RETURN(auto re, Regex::Compile(kGpt2Pattern));
      stages->push_back(std::make_unique<SplitStage>(std::move(re), true, true));
    }
    return OkStatus();
  }
  return UnimplementedError("pre_tokenizer type '" + type +
                            "' is not supported (Sequence, Split, ByteLevel are)");
}

}  // namespace

StatusOr<std::unique_ptr<Normalizer>> Normalizer::Create(const json& spec) {
  if (spec.is_null()) return std::unique_ptr<Normalizer>(new IdentityNormalizer());
  const std::string type = JsonString(spec, "type");
  if (type == "NFC") return std::unique_ptr<Normalizer>(new NfcNormalizer());
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (const auto& p : JsonField(spec, "normalizers")) {
      ASSIGN_OR_RETURN(auto n, Create(p));
      parts.push_back(std::move(n));
    }
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(parts)));
  }
  return UnimplementedError("normalizer type '" + type + "' is not supported (null, NFC, Sequence are)");
}

StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(const json& spec) {
  std::vector<std::unique_ptr<Stage>> stages;
  RETURN_IF_ERROR(AddStages(spec, &stages));
  return std::unique_ptr<PreTokenizer>(new SequencePreTokenizer(std::move(stages)));
}

}  // namespace crescent::tokenizer
