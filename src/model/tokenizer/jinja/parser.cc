#include "model/tokenizer/jinja/parser.h"

#include <set>

#include "model/tokenizer/jinja/lexer.h"

namespace crescent::jinja {
namespace {

using TT = Token::Type;

// Nesting limit for expressions and blocks: deeper input is rejected instead
// of overflowing the stack (templates from the Hub nest a few levels).
constexpr int kMaxDepth = 200;

// Parse errors travel as this exception inside parser.cc only; ParseProgram
// turns it into a Status.
struct ParseError {
  int line;
  std::string message;
};

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  std::shared_ptr<const Program> Run() {
    auto program = std::make_shared<Program>();
    std::string end_tag;
    program->body = ParseBody({}, &end_tag);
    return program;
  }

 private:
  // ---- token stream ----
  const Token& Peek(size_t ahead = 0) const { return toks_[std::min(pos_ + ahead, toks_.size() - 1)]; }
  const Token& Next() { return toks_[pos_ < toks_.size() - 1 ? pos_++ : pos_]; }
  bool IsOp(const char* op, size_t ahead = 0) const { return Peek(ahead).type == TT::kOp && Peek(ahead).text == op; }
  bool IsName(const char* name, size_t ahead = 0) const {
    return Peek(ahead).type == TT::kName && Peek(ahead).text == name;
  }
  bool AcceptOp(const char* op) {
    if (!IsOp(op)) return false;
    ++pos_;
    return true;
  }
  bool AcceptName(const char* name) {
    if (!IsName(name)) return false;
    ++pos_;
    return true;
  }
  static std::string Describe(const Token& t) {
    switch (t.type) {
      case TT::kEof: return "end of template";
      case TT::kBlockEnd: return "'%}'";
      case TT::kVarEnd: return "'}}'";
      case TT::kString: return "string '" + t.text + "'";
      default: return "'" + t.text + "'";
    }
  }
  [[noreturn]] void Fail(const std::string& what) const { throw ParseError{Peek().line, what}; }
  void ExpectOp(const char* op, const char* construct) {
    if (!AcceptOp(op)) Fail(std::string("expected '") + op + "' in " + construct + ", got " + Describe(Peek()));
  }
  void ExpectBlockEnd(const std::string& construct) {
    if (Peek().type != TT::kBlockEnd) Fail("expected '%}' to end '{% " + construct + " %}', got " + Describe(Peek()));
    ++pos_;
  }
  std::string ExpectNameToken(const char* construct) {
    if (Peek().type != TT::kName) Fail(std::string("expected a name in ") + construct + ", got " + Describe(Peek()));
    return Next().text;
  }

  struct DepthGuard {
    explicit DepthGuard(Parser* p) : p(p) {
      if (++p->depth_ > kMaxDepth) p->Fail("template nests deeper than " + std::to_string(kMaxDepth) + " levels");
    }
    ~DepthGuard() { --p->depth_; }
    Parser* p;
  };

  ExprPtr Make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // ---- statements ----

  // Parses nodes until a block tag whose name is in `ends` (consumed up to
  // the name, which goes to *end_tag) or, with empty `ends`, to the end.
  Body ParseBody(const std::set<std::string>& ends, std::string* end_tag) {
    DepthGuard guard(this);
    Body body;
    while (true) {
      const Token& t = Peek();
      if (t.type == TT::kEof) {
        if (!ends.empty()) Fail("missing '{% " + *ends.rbegin() + " %}' (end of template reached)");
        return body;
      }
      if (t.type == TT::kText) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kText;
        n->line = t.line;
        n->text = Next().text;
        body.push_back(std::move(n));
      } else if (t.type == TT::kVarBegin) {
        Next();
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::kOutput;
        n->line = t.line;
        n->expr = ParseExpression();
        if (Peek().type != TT::kVarEnd) Fail("expected '}}' to end '{{ ... }}', got " + Describe(Peek()));
        Next();
        body.push_back(std::move(n));
      } else if (t.type == TT::kBlockBegin) {
        const Token& name = Peek(1);
        if (name.type != TT::kName) {
          Next();
          Fail("expected a tag name after '{%', got " + Describe(Peek()));
        }
        if (ends.count(name.text)) {
          pos_ += 2;
          *end_tag = name.text;
          return body;
        }
        pos_ += 2;
        ParseStatement(name.text, name.line, &body);
      } else {
        Fail("unexpected " + Describe(t));
      }
    }
  }

  void ParseStatement(const std::string& tag, int line, Body* body) {
    auto n = std::make_unique<Node>();
    n->line = line;
    std::string end;
    if (tag == "if") {
      n->kind = Node::Kind::kIf;
      ExprPtr cond = ParseExpression();
      ExpectBlockEnd("if");
      while (true) {
        Body b = ParseBody({"elif", "else", "endif"}, &end);
        n->branches.emplace_back(std::move(cond), std::move(b));
        if (end == "elif") {
          cond = ParseExpression();
          ExpectBlockEnd("elif");
          continue;
        }
        if (end == "else") {
          ExpectBlockEnd("else");
          n->else_body = ParseBody({"endif"}, &end);
        }
        ExpectBlockEnd("endif");
        break;
      }
    } else if (tag == "for") {
      n->kind = Node::Kind::kFor;
      do {
        n->targets.push_back(ExpectNameToken("'for' targets"));
      } while (AcceptOp(","));
      if (!AcceptName("in")) Fail("expected 'in' in '{% for %}', got " + Describe(Peek()));
      n->expr = ParseTupleOrExpression(/*with_condexpr=*/false);
      if (AcceptName("if")) n->cond = ParseExpression();
      if (IsName("recursive")) Fail("'{% for ... recursive %}' is not supported");
      ExpectBlockEnd("for");
      n->body = ParseBody({"else", "endfor"}, &end);
      if (end == "else") {
        ExpectBlockEnd("else");
        n->else_body = ParseBody({"endfor"}, &end);
      }
      ExpectBlockEnd("endfor");
    } else if (tag == "set") {
      n->kind = Node::Kind::kSet;
      n->targets.push_back(ExpectNameToken("'set'"));
      if (AcceptOp(".")) {
        n->attr = ExpectNameToken("'set' attribute");
      } else {
        while (AcceptOp(",")) n->targets.push_back(ExpectNameToken("'set' targets"));
      }
      if (AcceptOp("=")) {
        n->expr = ParseTupleOrExpression(true);
        ExpectBlockEnd("set");
      } else {
        if (!n->attr.empty() || n->targets.size() != 1) Fail("block '{% set %}' takes one plain name");
        ExpectBlockEnd("set");
        n->kind = Node::Kind::kSetBlock;
        n->body = ParseBody({"endset"}, &end);
        ExpectBlockEnd("endset");
      }
    } else if (tag == "macro") {
      n->kind = Node::Kind::kMacro;
      n->targets.push_back(ExpectNameToken("'macro'"));
      ExpectOp("(", "'macro'");
      while (!AcceptOp(")")) {
        if (!n->params.empty()) ExpectOp(",", "'macro' parameters");
        if (AcceptOp(")")) break;
        n->params.push_back(ExpectNameToken("'macro' parameters"));
        n->defaults.push_back(AcceptOp("=") ? ParseExpression() : nullptr);
      }
      ExpectBlockEnd("macro");
      n->body = ParseBody({"endmacro"}, &end);
      ExpectBlockEnd("endmacro");
    } else if (tag == "call") {
      n->kind = Node::Kind::kCallBlock;
      if (IsOp("(")) Fail("'{% call(args) %}' with caller arguments is not supported");
      n->expr = ParseExpression();
      if (n->expr->kind != Expr::Kind::kCall) Fail("'{% call %}' needs a macro call");
      ExpectBlockEnd("call");
      n->body = ParseBody({"endcall"}, &end);
      ExpectBlockEnd("endcall");
    } else if (tag == "filter") {
      n->kind = Node::Kind::kFilterBlock;
      n->expr = ParseFilterChain(nullptr, line);
      ExpectBlockEnd("filter");
      n->body = ParseBody({"endfilter"}, &end);
      ExpectBlockEnd("endfilter");
    } else if (tag == "break" || tag == "continue") {
      n->kind = tag == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      ExpectBlockEnd(tag);
    } else if (tag == "generation") {
      // transformers' AssistantTracker tag: marks assistant text, renders its body.
      ExpectBlockEnd(tag);
      Body inner = ParseBody({"endgeneration"}, &end);
      ExpectBlockEnd("endgeneration");
      for (auto& node : inner) body->push_back(std::move(node));
      return;
    } else {
      Fail("unknown or unsupported tag '{% " + tag + " %}'");
    }
    body->push_back(std::move(n));
  }

  // ---- expressions (Jinja's precedence, lowest first) ----

  // `a, b` without parentheses is a tuple (for `for x in a, b` and `set`).
  ExprPtr ParseTupleOrExpression(bool with_condexpr) {
    const int line = Peek().line;
    ExprPtr first = with_condexpr ? ParseExpression() : ParseOr();
    if (!IsOp(",")) return first;
    auto t = Make(Expr::Kind::kTuple, line);
    t->args.push_back(std::move(first));
    while (AcceptOp(",")) t->args.push_back(with_condexpr ? ParseExpression() : ParseOr());
    return t;
  }

  ExprPtr ParseExpression() {
    DepthGuard guard(this);
    const int line = Peek().line;
    ExprPtr e = ParseOr();
    if (AcceptName("if")) {
      auto c = Make(Expr::Kind::kCond, line);
      c->a = std::move(e);
      c->b = ParseOr();
      if (AcceptName("else")) c->c = ParseExpression();
      return c;
    }
    return e;
  }

  ExprPtr ParseOr() {
    ExprPtr e = ParseAnd();
    while (IsName("or")) {
      auto n = Make(Expr::Kind::kOr, Next().line);
      n->a = std::move(e);
      n->b = ParseAnd();
      e = std::move(n);
    }
    return e;
  }

  ExprPtr ParseAnd() {
    ExprPtr e = ParseNot();
    while (IsName("and")) {
      auto n = Make(Expr::Kind::kAnd, Next().line);
      n->a = std::move(e);
      n->b = ParseNot();
      e = std::move(n);
    }
    return e;
  }

  ExprPtr ParseNot() {
    if (IsName("not")) {
      DepthGuard guard(this);
      auto n = Make(Expr::Kind::kNot, Next().line);
      n->a = ParseNot();
      return n;
    }
    return ParseCompare();
  }

  ExprPtr Binary(const std::string& op, ExprPtr a, ExprPtr b, int line) {
    auto n = Make(Expr::Kind::kBinary, line);
    n->name = op;
    n->a = std::move(a);
    n->b = std::move(b);
    return n;
  }

  ExprPtr ParseCompare() {
    ExprPtr e = ParseMath1();
    while (true) {
      const int line = Peek().line;
      if (Peek().type == TT::kOp && (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" ||
                                     Peek().text == ">" || Peek().text == "<=" || Peek().text == ">=")) {
        std::string op = Next().text;
        e = Binary(op, std::move(e), ParseMath1(), line);
      } else if (AcceptName("in")) {
        e = Binary("in", std::move(e), ParseMath1(), line);
      } else if (IsName("not") && IsName("in", 1)) {
        pos_ += 2;
        e = Binary("notin", std::move(e), ParseMath1(), line);
      } else {
        return e;
      }
    }
  }

  ExprPtr ParseMath1() {
    ExprPtr e = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      const Token& t = Next();
      e = Binary(t.text, std::move(e), ParseConcat(), t.line);
    }
    return e;
  }

  ExprPtr ParseConcat() {
    ExprPtr e = ParseMath2();
    while (IsOp("~")) {
      const int line = Next().line;
      e = Binary("~", std::move(e), ParseMath2(), line);
    }
    return e;
  }

  ExprPtr ParseMath2() {
    ExprPtr e = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      const Token& t = Next();
      e = Binary(t.text, std::move(e), ParsePow(), t.line);
    }
    return e;
  }

  ExprPtr ParsePow() {
    ExprPtr e = ParseUnary(true);
    while (IsOp("**")) {
      const int line = Next().line;
      e = Binary("**", std::move(e), ParseUnary(true), line);
    }
    return e;
  }

  ExprPtr ParseUnary(bool with_filter) {
    DepthGuard guard(this);
    ExprPtr e;
    const int line = Peek().line;
    if (AcceptOp("-")) {
      e = Make(Expr::Kind::kNeg, line);
      e->a = ParseUnary(false);
    } else if (AcceptOp("+")) {
      e = Make(Expr::Kind::kPos, line);
      e->a = ParseUnary(false);
    } else {
      e = ParsePostfix(ParsePrimary());
    }
    return with_filter ? ParseFilterExpr(std::move(e)) : std::move(e);
  }

  ExprPtr ParsePrimary() {
    const Token& t = Peek();
    auto lit = [&](Value v) {
      auto e = Make(Expr::Kind::kLiteral, t.line);
      e->value = std::move(v);
      return e;
    };
    switch (t.type) {
      case TT::kName: {
        Next();
        if (t.text == "true" || t.text == "True") return lit(Value(true));
        if (t.text == "false" || t.text == "False") return lit(Value(false));
        if (t.text == "none" || t.text == "None") return lit(Value::None());
        auto e = Make(Expr::Kind::kName, t.line);
        e->name = t.text;
        return e;
      }
      case TT::kString: {
        std::string s;
        const int line = t.line;
        while (Peek().type == TT::kString) s += Next().text;  // adjacent literals concatenate
        auto e = Make(Expr::Kind::kLiteral, line);
        e->value = Value(std::move(s));
        return e;
      }
      case TT::kInt: {
        Next();
        try {
          return lit(Value(static_cast<int64_t>(std::stoll(t.text))));
        } catch (...) {
          Fail("integer literal '" + t.text + "' is out of range");
        }
      }
      case TT::kFloat: {
        Next();
        try {
          return lit(Value(std::stod(t.text)));
        } catch (...) {
          Fail("float literal '" + t.text + "' is out of range");
        }
      }
      case TT::kOp:
        if (t.text == "(") {
          Next();
          auto tuple = Make(Expr::Kind::kTuple, t.line);
          if (AcceptOp(")")) return tuple;
          ExprPtr first = ParseExpression();
          if (AcceptOp(")")) return first;
          tuple->args.push_back(std::move(first));
          while (AcceptOp(",")) {
            if (IsOp(")")) break;
            tuple->args.push_back(ParseExpression());
          }
          ExpectOp(")", "tuple");
          return tuple;
        }
        if (t.text == "[") {
          Next();
          auto list = Make(Expr::Kind::kList, t.line);
          while (!AcceptOp("]")) {
            if (!list->args.empty()) ExpectOp(",", "list literal");
            if (AcceptOp("]")) break;
            list->args.push_back(ParseExpression());
          }
          return list;
        }
        if (t.text == "{") {
          Next();
          auto dict = Make(Expr::Kind::kDict, t.line);
          while (!AcceptOp("}")) {
            if (!dict->args.empty()) ExpectOp(",", "dict literal");
            if (AcceptOp("}")) break;
            dict->args.push_back(ParseExpression());
            ExpectOp(":", "dict literal");
            dict->args.push_back(ParseExpression());
          }
          return dict;
        }
        break;
      default: break;
    }
    Fail("expected an expression, got " + Describe(t));
  }

  ExprPtr ParsePostfix(ExprPtr e) {
    while (true) {
      const int line = Peek().line;
      if (AcceptOp(".")) {
        if (Peek().type == TT::kInt) {
          auto item = Make(Expr::Kind::kItem, line);
          item->a = std::move(e);
          item->b = Make(Expr::Kind::kLiteral, line);
          item->b->value = Value(static_cast<int64_t>(std::stoll(Next().text)));
          e = std::move(item);
          continue;
        }
        auto attr = Make(Expr::Kind::kAttr, line);
        attr->a = std::move(e);
        attr->name = ExpectNameToken("attribute access");
        e = std::move(attr);
      } else if (AcceptOp("[")) {
        e = ParseSubscript(std::move(e), line);
      } else if (IsOp("(")) {
        e = ParseCall(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprPtr ParseSubscript(ExprPtr target, int line) {
    ExprPtr parts[3];
    int colons = 0;
    for (int part = 0; part < 3; ++part) {
      if (!IsOp(":") && !IsOp("]")) parts[part] = ParseExpression();
      if (part < 2 && AcceptOp(":")) {
        ++colons;
        continue;
      }
      break;
    }
    ExpectOp("]", "subscript");
    if (colons == 0) {
      if (!parts[0]) Fail("empty subscript '[]'");
      auto item = Make(Expr::Kind::kItem, line);
      item->a = std::move(target);
      item->b = std::move(parts[0]);
      return item;
    }
    auto slice = Make(Expr::Kind::kSlice, line);
    slice->a = std::move(target);
    for (auto& p : parts) slice->args.push_back(std::move(p));
    return slice;
  }

  void ParseArgs(Expr* call, const char* construct) {
    ExpectOp("(", construct);
    while (!AcceptOp(")")) {
      if (!call->args.empty() || !call->kwargs.empty()) ExpectOp(",", construct);
      if (AcceptOp(")")) break;
      if (Peek().type == TT::kName && IsOp("=", 1)) {
        std::string name = Next().text;
        Next();
        call->kwargs.emplace_back(std::move(name), ParseExpression());
      } else {
        if (!call->kwargs.empty()) Fail(std::string("positional argument after keyword argument in ") + construct);
        call->args.push_back(ParseExpression());
      }
    }
  }

  ExprPtr ParseCall(ExprPtr callee) {
    auto call = Make(Expr::Kind::kCall, Peek().line);
    call->a = std::move(callee);
    ParseArgs(call.get(), "call");
    return call;
  }

  ExprPtr ParseFilterChain(ExprPtr input, int line) {
    do {
      auto f = Make(Expr::Kind::kFilter, Peek().line);
      f->a = std::move(input);
      f->name = ExpectNameToken("filter");
      while (IsOp(".") && Peek(1).type == TT::kName) {  // dotted filter names
        Next();
        f->name += "." + Next().text;
      }
      if (IsOp("(")) ParseArgs(f.get(), "filter arguments");
      input = std::move(f);
    } while (AcceptOp("|"));
    return input;
  }

  ExprPtr ParseFilterExpr(ExprPtr e) {
    while (true) {
      if (AcceptOp("|")) {
        e = ParseFilterChain(std::move(e), Peek().line);
      } else if (IsName("is")) {
        auto test = Make(Expr::Kind::kTest, Next().line);
        test->negate = AcceptName("not");
        test->a = std::move(e);
        test->name = ExpectNameToken("test");
        if (IsOp("(")) {
          ParseArgs(test.get(), "test arguments");
        } else {
          const Token& t = Peek();
          const bool arg_start = t.type == TT::kName || t.type == TT::kString || t.type == TT::kInt ||
                                 t.type == TT::kFloat || (t.type == TT::kOp && (t.text == "[" || t.text == "{"));
          if (arg_start && !IsName("else") && !IsName("or") && !IsName("and")) {
            test->args.push_back(ParsePostfix(ParsePrimary()));
          }
        }
        e = std::move(test);
      } else if (IsOp("(")) {
        e = ParseCall(std::move(e));
      } else {
        return e;
      }
    }
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

StatusOr<std::shared_ptr<const Program>> ParseProgram(std::string_view source) {
  ASSIGN_OR_RETURN(std::vector<Token> tokens, Lex(source));
  try {
    return Parser(std::move(tokens)).Run();
  } catch (const ParseError& e) {
    return InvalidArgumentError("template line " + std::to_string(e.line) + ": " + e.message);
  }
}

}  // namespace crescent::jinja
