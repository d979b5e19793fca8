// Syntax tree of a parsed template (internal to the jinja/ directory).
// Every node carries the 1-based source line it started on, for errors.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/tokenizer/jinja/value.h"

namespace crescent::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,   // value
    kName,      // name
    kList,      // [args...]
    kTuple,     // (args...) -- evaluated as a list
    kDict,      // {args[2i]: args[2i+1]}
    kAttr,      // a.name
    kItem,      // a[b]
    kSlice,     // a[args0:args1:args2], a null ExprPtr for an omitted part
    kCall,      // a(args..., kwargs...)
    kFilter,    // a | name(args..., kwargs...); a is null inside {% filter %}
    kTest,      // a is [not] name(args...)   (negate)
    kNeg,       // -a
    kPos,       // +a
    kNot,       // not a
    kBinary,    // a op b (name holds the operator: + - * / // % ** ~ == != < > <= >= in notin)
    kAnd,       // a and b
    kOr,        // a or b
    kCond,      // a if b else c   (c may be null)
  };
  Kind kind;
  int line = 0;
  Value value;
  std::string name;
  bool negate = false;
  ExprPtr a, b, c;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches (cond, body)..., else_body
    kFor,       // targets in expr [if cond] body else_body
    kSet,       // targets = expr, or target.attr = expr (attr non-empty)
    kSetBlock,  // {% set target %}body{% endset %}
    kMacro,     // name(params = defaults) body
    kCallBlock, // {% call expr %}body{% endcall %}: caller() renders body
    kFilterBlock,  // {% filter expr %}body{% endfilter %}: expr is a kFilter chain with a null input
    kBreak,
    kContinue,
  };
  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr cond;                          // for: the inline `if` filter
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  std::vector<std::string> targets;      // for/set/macro-name
  std::string attr;                      // set ns.attr
  std::vector<std::string> params;       // macro parameter names
  std::vector<ExprPtr> defaults;         // [i] default of params[i] or null
};

struct Program {
  Body body;
};

}  // namespace crescent::jinja
