#include "model/tokenizer/jinja/lexer.h"

#include "model/tokenizer/utf8.h"

#include <cctype>

namespace crescent::jinja {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool IsNameStart(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool IsNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

class Lexer {
 public:
  explicit Lexer(std::string_view src) : src_(src) {}

  StatusOr<std::vector<Token>> Run() {
    // keep_trailing_newline=False: one trailing newline of the source goes.
    if (!src_.empty() && src_.back() == '\n') src_.remove_suffix(1);
    if (!src_.empty() && src_.back() == '\r') src_.remove_suffix(1);
    size_t pos = 0;
    bool strip_next = false;  // previous tag ended with '-'
    while (pos < src_.size()) {
      size_t open = FindTagOpen(pos);
      std::string text(src_.substr(pos, open - pos));
      const size_t text_start = pos;
      if (strip_next) {
        size_t k = 0;
        while (k < text.size() && IsSpace(text[k])) ++k;
        text.erase(0, k);
        strip_next = false;
      }
      if (open == src_.size()) {
        Emit(Token::Type::kText, std::move(text), text_start);
        break;
      }
      const char kind = src_[open + 1];
      size_t p = open + 2;
      const bool minus = p < src_.size() && src_[p] == '-';
      const bool plus = p < src_.size() && src_[p] == '+';
      if (minus || plus) ++p;
      if (minus) {
        while (!text.empty() && IsSpace(text.back())) text.pop_back();
      } else if (kind != '{' && !plus) {
        LstripBlock(&text, text_start);
      }
      Emit(Token::Type::kText, std::move(text), text_start);
      size_t end;
      if (kind == '#') {
        size_t close = src_.find("#}", p);
        if (close == std::string_view::npos) return Error(open, "comment '{#' is never closed with '#}'");
        strip_next = close > p && src_[close - 1] == '-';
        end = close + 2;
      } else {
        ASSIGN_OR_RETURN(end, LexTag(kind, open, p, &strip_next));
      }
      if (!strip_next && kind != '{') end = TrimBlock(end);
      pos = end;
      if (kind == '%' && IsRawTag()) {
        ASSIGN_OR_RETURN(pos, LexRaw(pos, &strip_next));
      }
    }
    tokens_.push_back({Token::Type::kEof, "", LineAt(src_.size())});
    return std::move(tokens_);
  }

 private:
  size_t FindTagOpen(size_t pos) const {
    for (size_t i = src_.find('{', pos); i != std::string_view::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return src_.size();
  }

  // lstrip_blocks: whitespace between a line start and a block tag goes.
  void LstripBlock(std::string* text, size_t text_start) const {
    const size_t nl = text->rfind('\n');
    const size_t from = nl == std::string::npos ? 0 : nl + 1;
    const bool line_start = nl != std::string::npos || text_start == 0 || src_[text_start - 1] == '\n';
    if (!line_start) return;
    for (size_t k = from; k < text->size(); ++k) {
      if (!IsSpace((*text)[k])) return;
    }
    text->erase(from);
  }

  // trim_blocks: the first newline after a block tag goes.
  size_t TrimBlock(size_t end) const {
    if (end < src_.size() && src_[end] == '\n') return end + 1;
    if (end + 1 < src_.size() && src_[end] == '\r' && src_[end + 1] == '\n') return end + 2;
    return end;
  }

  bool IsRawTag() const {
    const size_t n = tokens_.size();
    return n >= 3 && tokens_[n - 1].type == Token::Type::kBlockEnd && tokens_[n - 2].type == Token::Type::kName &&
           tokens_[n - 2].text == "raw" && tokens_[n - 3].type == Token::Type::kBlockBegin;
  }

  // After {% raw %}: everything up to {% endraw %} is text.
  StatusOr<size_t> LexRaw(size_t pos, bool* strip_next) {
    tokens_.resize(tokens_.size() - 3);
    for (size_t i = src_.find("{%", pos); i != std::string_view::npos; i = src_.find("{%", i + 2)) {
      size_t p = i + 2;
      const bool minus = p < src_.size() && src_[p] == '-';
      if (minus || (p < src_.size() && src_[p] == '+')) ++p;
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      if (src_.substr(p, 6) != "endraw") continue;
      p += 6;
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      const bool close_minus = p < src_.size() && src_[p] == '-';
      if (close_minus) ++p;
      if (src_.substr(p, 2) != "%}") continue;
      std::string text(src_.substr(pos, i - pos));
      if (*strip_next) {
        size_t k = 0;
        while (k < text.size() && IsSpace(text[k])) ++k;
        text.erase(0, k);
      }
      if (minus) {
        while (!text.empty() && IsSpace(text.back())) text.pop_back();
      }
      Emit(Token::Type::kText, std::move(text), pos);
      *strip_next = close_minus;
      return close_minus ? p + 2 : TrimBlock(p + 2);
    }
    return Error(pos, "'{% raw %}' is never closed with '{% endraw %}'");
  }

  // Lexes the inside of {{ ... }} or {% ... %}; returns the offset after the tag.
  StatusOr<size_t> LexTag(char kind, size_t open, size_t p, bool* strip_next) {
    const std::string_view close = kind == '{' ? "}}" : "%}";
    Emit(kind == '{' ? Token::Type::kVarBegin : Token::Type::kBlockBegin, "", open);
    int depth = 0;  // open brackets: "}}" inside a dict literal is not the end
    while (true) {
      while (p < src_.size() && IsSpace(src_[p])) ++p;
      if (p >= src_.size()) return Error(open, std::string("tag is never closed with '") + std::string(close) + "'");
      if (depth == 0) {
        if (src_[p] == '-' && src_.substr(p + 1, 2) == close) {
          *strip_next = true;
          Emit(kind == '{' ? Token::Type::kVarEnd : Token::Type::kBlockEnd, "", p);
          return p + 3;
        }
        if (src_.substr(p, 2) == close) {
          Emit(kind == '{' ? Token::Type::kVarEnd : Token::Type::kBlockEnd, "", p);
          return p + 2;
        }
      }
      const char c = src_[p];
      if (IsNameStart(c)) {
        size_t e = p;
        while (e < src_.size() && IsNameChar(src_[e])) ++e;
        Emit(Token::Type::kName, std::string(src_.substr(p, e - p)), p);
        p = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        ASSIGN_OR_RETURN(p, LexNumber(p));
      } else if (c == '\'' || c == '"') {
        ASSIGN_OR_RETURN(p, LexString(p));
      } else {
        static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op(1, c);
        for (auto t : kTwo) {
          if (src_.substr(p, 2) == t) op = std::string(t);
        }
        if (op.size() == 1 && std::string_view("+-*/%~<>=()[]{}.,:|").find(c) == std::string_view::npos) {
          return Error(p, std::string("unexpected character '") + c + "'");
        }
        if (c == '(' || c == '[' || c == '{') ++depth;
        if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
        Emit(Token::Type::kOp, op, p);
        p += op.size();
      }
    }
  }

  StatusOr<size_t> LexNumber(size_t p) {
    size_t e = p;
    bool is_float = false;
    auto digits = [&] {
      while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
    };
    digits();
    if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      is_float = true;
      ++e;
      digits();
    }
    if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t f = e + 1;
      if (f < src_.size() && (src_[f] == '+' || src_[f] == '-')) ++f;
      if (f < src_.size() && std::isdigit(static_cast<unsigned char>(src_[f]))) {
        is_float = true;
        e = f;
        digits();
      }
    }
    std::string text;
    for (size_t k = p; k < e; ++k) {
      if (src_[k] != '_') text.push_back(src_[k]);
    }
    Emit(is_float ? Token::Type::kFloat : Token::Type::kInt, text, p);
    return e;
  }

  StatusOr<size_t> LexString(size_t p) {
    const char quote = src_[p];
    std::string out;
    size_t e = p + 1;
    for (; e < src_.size() && src_[e] != quote; ++e) {
      if (src_[e] != '\\' || e + 1 >= src_.size()) {
        out.push_back(src_[e]);
        continue;
      }
      const char n = src_[++e];
      switch (n) {
        case 'n': out.push_back('\n'); break;
        case 't': out.push_back('\t'); break;
        case 'r': out.push_back('\r'); break;
        case '0': out.push_back('\0'); break;
        case '\\': case '\'': case '"': out.push_back(n); break;
        case 'u': case 'x': case 'U': {
          const size_t len = n == 'x' ? 2 : n == 'u' ? 4 : 8;
          if (e + len >= src_.size()) return Error(e, "truncated escape in string literal");
          char32_t cp = 0;
          for (size_t k = 1; k <= len; ++k) {
            const char h = src_[e + k];
            if (!std::isxdigit(static_cast<unsigned char>(h))) return Error(e, "bad \\u escape in string literal");
            cp = cp * 16 + static_cast<char32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
          }
          if (cp > 0x10FFFF) return Error(e, "escape beyond U+10FFFF in string literal");
          tokenizer::AppendUtf8(cp, &out);
          e += len;
          break;
        }
        default: out.push_back('\\'); out.push_back(n);
      }
    }
    if (e >= src_.size()) return Error(p, "string literal is never closed");
    Emit(Token::Type::kString, std::move(out), p);
    return e + 1;
  }

  int LineAt(size_t offset) {
    // Offsets only grow, so counting is incremental.
    if (offset < line_offset_) line_offset_ = 0, line_ = 1;
    for (; line_offset_ < offset && line_offset_ < src_.size(); ++line_offset_) line_ += src_[line_offset_] == '\n';
    return line_;
  }

  void Emit(Token::Type type, std::string text, size_t offset) {
    if (type == Token::Type::kText && text.empty()) return;
    tokens_.push_back({type, std::move(text), LineAt(offset)});
  }

  Status Error(size_t offset, const std::string& what) {
    return InvalidArgumentError("template line " + std::to_string(LineAt(offset)) + ": " + what);
  }

  std::string_view src_;
  std::vector<Token> tokens_;
  size_t line_offset_ = 0;
  int line_ = 1;
};

}  // namespace

StatusOr<std::vector<Token>> Lex(std::string_view source) { return Lexer(source).Run(); }

}  // namespace crescent::jinja
