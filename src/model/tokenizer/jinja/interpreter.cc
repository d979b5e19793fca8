#include "model/tokenizer/jinja/interpreter.h"

#include <cmath>

#include "model/tokenizer/jinja/parser.h"

namespace crescent::jinja {
namespace {

[[noreturn]] void FailUndefined(const Value& v, int line, const std::string& use) {
  const std::string& name = v.undefined_name();
  Interpreter::Fail(line, (name.empty() ? std::string("value") : "'" + name + "'") + " is undefined" +
                              (use.empty() ? "" : " (" + use + ")"));
}

[[noreturn]] void FailOperands(const std::string& op, const Value& a, const Value& b, int line) {
  if (a.is_undefined()) FailUndefined(a, line, "operator " + op);
  if (b.is_undefined()) FailUndefined(b, line, "operator " + op);
  Interpreter::Fail(line, "unsupported operand types for " + op + ": '" + a.TypeName() + "' and '" +
                              b.TypeName() + "'");
}

bool Contains(const Value& container, const Value& item, int line) {
  switch (container.kind()) {
    case Value::Kind::kString:
      if (!item.is_string()) Interpreter::Fail(line, "'in <string>' requires a string, not " + item.TypeName());
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::kArray:
      for (const Value& v : container.array()) {
        if (Equals(v, item)) return true;
      }
      return false;
    case Value::Kind::kObject:
      return item.is_string() && container.object().Find(item.str()) != nullptr;
    case Value::Kind::kUndefined:
      return false;
    default:
      Interpreter::Fail(line, "argument of type '" + container.TypeName() + "' is not iterable");
  }
}

Value Arith(const std::string& op, const Value& a, const Value& b, int line) {
  const bool ints = (a.is_int() || a.is_bool()) && (b.is_int() || b.is_bool());
  if (op == "+") {
    if (a.is_string() && b.is_string()) return Value(a.str() + b.str());
    if (a.is_array() && b.is_array()) {
      Array r = a.array();
      r.insert(r.end(), b.array().begin(), b.array().end());
      return Value(std::move(r));
    }
  }
  if (op == "*") {
    const Value* seq = a.is_string() || a.is_array() ? &a : b.is_string() || b.is_array() ? &b : nullptr;
    const Value* count = seq == &a ? &b : &a;
    if (seq && (count->is_int() || count->is_bool())) {
      const int64_t n = count->as_int();
      if (n > 0 && (seq->is_string() ? seq->str().size() : seq->array().size()) * static_cast<uint64_t>(n) >
                       (uint64_t{64} << 20)) {
        Interpreter::Fail(line, "sequence repetition result is too large");
      }
      if (seq->is_string()) {
        std::string r;
        for (int64_t i = 0; i < n; ++i) r += seq->str();
        return Value(std::move(r));
      }
      Array r;
      for (int64_t i = 0; i < n; ++i) r.insert(r.end(), seq->array().begin(), seq->array().end());
      return Value(std::move(r));
    }
  }
  if (!a.is_number() || !b.is_number()) FailOperands(op, a, b, line);
  if (ints && op != "/" && op != "**") {
    const int64_t x = a.as_int(), y = b.as_int();
    if (op == "+") return Value(static_cast<int64_t>(static_cast<uint64_t>(x) + static_cast<uint64_t>(y)));
    if (op == "-") return Value(static_cast<int64_t>(static_cast<uint64_t>(x) - static_cast<uint64_t>(y)));
    if (op == "*") return Value(static_cast<int64_t>(static_cast<uint64_t>(x) * static_cast<uint64_t>(y)));
    if (y == 0) Interpreter::Fail(line, "integer division or modulo by zero");
    if (x == INT64_MIN && y == -1) Interpreter::Fail(line, "integer overflow");
    int64_t q = x / y, r = x % y;
    if (r != 0 && ((r < 0) != (y < 0))) --q, r += y;  // Python floors
    return Value(op == "//" ? q : r);
  }
  const double x = a.as_double(), y = b.as_double();
  if (op == "+") return Value(x + y);
  if (op == "-") return Value(x - y);
  if (op == "*") return Value(x * y);
  if (op == "**") {
    if (ints && b.as_int() >= 0) {
      int64_t r = 1, base = a.as_int();
      for (int64_t e = b.as_int(); e > 0 && r != 0; --e) {
        r = static_cast<int64_t>(static_cast<uint64_t>(r) * static_cast<uint64_t>(base));
        if (e > 64 && (base == 0 || base == 1)) break;
      }
      return Value(r);
    }
    return Value(std::pow(x, y));
  }
  if (y == 0) Interpreter::Fail(line, "division by zero");
  if (op == "/") return Value(x / y);
  if (op == "//") return Value(std::floor(x / y));
  double r = std::fmod(x, y);
  if (r != 0 && ((r < 0) != (y < 0))) r += y;
  return Value(r);
}

}  // namespace

void Interpreter::Step(int line) {
  if (++steps_ > limits_.max_steps) {
    Fail(line, "template exceeded " + std::to_string(limits_.max_steps) + " evaluation steps");
  }
  if (out_->size() > limits_.max_output_bytes) {
    Fail(line, "rendered text exceeds " + std::to_string(limits_.max_output_bytes) + " bytes");
  }
}

Value Interpreter::Lookup(const std::string& name, Frame* frame) const {
  for (Frame* f = frame; f; f = f->parent) {
    auto it = f->vars.find(name);
    if (it != f->vars.end()) return it->second;
  }
  if (const Value* g = GlobalFunction(name)) return *g;
  return Value::Undefined(name);
}

void Interpreter::Assign(Frame* frame, const std::vector<std::string>& targets, Value v, int line) {
  if (targets.size() == 1) {
    frame->vars[targets[0]] = std::move(v);
    return;
  }
  std::vector<Value> items = Iterate(v, line);
  if (items.size() != targets.size()) {
    Fail(line, "cannot unpack " + std::to_string(items.size()) + " values into " +
                   std::to_string(targets.size()) + " names");
  }
  for (size_t i = 0; i < targets.size(); ++i) frame->vars[targets[i]] = std::move(items[i]);
}

void Interpreter::RenderBody(const Body& body, Frame* frame) { RenderNodes(body, frame); }

std::string Interpreter::Capture(const Body& body, Frame* frame) {
  std::string captured;
  std::swap(captured, *out_);
  try {
    RenderNodes(body, frame);
  } catch (...) {
    std::swap(captured, *out_);
    throw;
  }
  std::swap(captured, *out_);
  return captured;
}

Interpreter::Flow Interpreter::RenderNodes(const Body& body, Frame* frame) {
  for (const auto& n : body) {
    const Flow flow = RenderNode(*n, frame);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::RenderNode(const Node& n, Frame* frame) {
  Step(n.line);
  switch (n.kind) {
    case Node::Kind::kText:
      out_->append(n.text);
      return Flow::kNormal;
    case Node::Kind::kOutput:
      Eval(*n.expr, frame).AppendTo(out_);
      return Flow::kNormal;
    case Node::Kind::kIf:
      for (const auto& [cond, body] : n.branches) {
        if (Eval(*cond, frame).Truthy()) return RenderNodes(body, frame);
      }
      return RenderNodes(n.else_body, frame);
    case Node::Kind::kFor: {
      bool broke = false;
      RenderFor(n, frame, &broke);
      return Flow::kNormal;
    }
    case Node::Kind::kSet: {
      Value v = Eval(*n.expr, frame);
      if (n.attr.empty()) {
        Assign(frame, n.targets, std::move(v), n.line);
        return Flow::kNormal;
      }
      Value target = Lookup(n.targets[0], frame);
      if (!target.is_object() || !target.object().is_namespace) {
        Fail(n.line, "cannot set attribute '" + n.attr + "' on '" + n.targets[0] +
                         "': only namespace() objects take attributes (in '{% set " + n.targets[0] + "." +
                         n.attr + " %}')");
      }
      target.object().Set(n.attr, std::move(v));
      return Flow::kNormal;
    }
    case Node::Kind::kSetBlock:
      frame->vars[n.targets[0]] = Value(Capture(n.body, frame));
      return Flow::kNormal;
    case Node::Kind::kMacro:
      DefineMacro(n, frame);
      return Flow::kNormal;
    case Node::Kind::kCallBlock: {
      auto caller = std::make_shared<Callable>();
      caller->name = "caller";
      const Body* body = &n.body;
      caller->fn = [body, frame](Interpreter& in, std::vector<Value>&, KwArgs&, int) {
        return Value(in.Capture(*body, frame));
      };
      std::vector<Value> args;
      KwArgs kwargs;
      EvalArgs(*n.expr, frame, &args, &kwargs);
      kwargs.emplace_back("caller", Value(caller));
      Value callee = Eval(*n.expr->a, frame);
      if (!callee.is_callable()) Fail(n.line, "'{% call %}' target is not a macro");
      callee.callable().fn(*this, args, kwargs, n.line).AppendTo(out_);
      return Flow::kNormal;
    }
    case Node::Kind::kFilterBlock: {
      Value v(Capture(n.body, frame));
      // The chain's innermost filter has no input expression: feed `v`.
      std::vector<const Expr*> chain;
      for (const Expr* f = n.expr.get(); f; f = f->a.get()) chain.push_back(f);
      for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        std::vector<Value> args;
        KwArgs kwargs;
        EvalArgs(**it, frame, &args, &kwargs);
        v = ApplyFilter(*this, (*it)->name, std::move(v), args, kwargs, (*it)->line);
      }
      v.AppendTo(out_);
      return Flow::kNormal;
    }
    case Node::Kind::kBreak: return Flow::kBreak;
    case Node::Kind::kContinue: return Flow::kContinue;
  }
  return Flow::kNormal;
}

void Interpreter::RenderFor(const Node& n, Frame* frame, bool* broke) {
  Value iterable = Eval(*n.expr, frame);
  if (!iterable.is_undefined() && !iterable.is_array() && !iterable.is_object() && !iterable.is_string()) {
    Fail(n.line, "'" + iterable.TypeName() + "' object is not iterable (in '{% for %}')");
  }
  std::vector<Value> items = Iterate(iterable, n.line);
  Frame loop_frame{{}, frame};
  if (n.cond) {  // `for x in xs if cond`: filtered before loop.* is computed
    std::vector<Value> kept;
    for (Value& item : items) {
      Assign(&loop_frame, n.targets, item, n.line);
      if (Eval(*n.cond, &loop_frame).Truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    RenderNodes(n.else_body, frame);
    return;
  }
  const auto len = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < len; ++i) {
    Step(n.line);
    Assign(&loop_frame, n.targets, items[i], n.line);
    auto loop = std::make_shared<Object>();
    loop->items = {{"index", Value(i + 1)},
                   {"index0", Value(i)},
                   {"revindex", Value(len - i)},
                   {"revindex0", Value(len - i - 1)},
                   {"first", Value(i == 0)},
                   {"last", Value(i == len - 1)},
                   {"length", Value(len)},
                   {"depth", Value(1)},
                   {"depth0", Value(0)},
                   {"previtem", i > 0 ? items[i - 1] : Value::Undefined("loop.previtem")},
                   {"nextitem", i + 1 < len ? items[i + 1] : Value::Undefined("loop.nextitem")}};
    loop_frame.vars["loop"] = Value(std::move(loop));
    if (RenderNodes(n.body, &loop_frame) == Flow::kBreak) {
      *broke = true;
      break;
    }
  }
}

void Interpreter::DefineMacro(const Node& n, Frame* frame) {
  auto macro = std::make_shared<Callable>();
  macro->name = n.targets[0];
  const Node* node = &n;
  macro->fn = [node](Interpreter& in, std::vector<Value>& args, KwArgs& kwargs, int line) {
    if (in.call_depth_ >= in.limits_.max_call_depth) {
      Fail(line, "macro '" + node->targets[0] + "' nested deeper than " +
                     std::to_string(in.limits_.max_call_depth) + " calls");
    }
    if (args.size() > node->params.size()) {
      Fail(line, "macro '" + node->targets[0] + "' takes at most " + std::to_string(node->params.size()) +
                     " arguments, got " + std::to_string(args.size()));
    }
    // Macros see the template's top-level variables, not the caller's locals.
    Frame f{{}, in.root_};
    for (size_t i = 0; i < node->params.size(); ++i) {
      if (i < args.size()) {
        f.vars[node->params[i]] = args[i];
      } else if (node->defaults[i]) {
        f.vars[node->params[i]] = in.Eval(*node->defaults[i], &f);
      } else {
        f.vars[node->params[i]] = Value::Undefined(node->params[i]);
      }
    }
    for (auto& [name, value] : kwargs) {
      bool known = name == "caller";
      for (const auto& p : node->params) known |= p == name;
      if (!known) Fail(line, "macro '" + node->targets[0] + "' has no parameter '" + name + "'");
      f.vars[name] = value;
    }
    ++in.call_depth_;
    std::string text;
    try {
      text = in.Capture(node->body, &f);
    } catch (...) {
      --in.call_depth_;
      throw;
    }
    --in.call_depth_;
    return Value(std::move(text));
  };
  frame->vars[n.targets[0]] = Value(std::move(macro));
}

void Interpreter::EvalArgs(const Expr& e, Frame* frame, std::vector<Value>* args, KwArgs* kwargs) {
  args->reserve(e.args.size());
  for (const auto& a : e.args) args->push_back(Eval(*a, frame));
  for (const auto& [name, a] : e.kwargs) kwargs->emplace_back(name, Eval(*a, frame));
}

Value Interpreter::GetAttr(const Value& obj, const std::string& name, int line) {
  if (obj.is_undefined()) FailUndefined(obj, line, "reading attribute '" + name + "'");
  if (obj.is_object()) {
    if (const Value* v = obj.object().Find(name)) return *v;
  }
  return Value::Undefined(name);
}

Value Interpreter::GetItem(const Value& obj, const Value& key, int line) {
  if (obj.is_undefined()) FailUndefined(obj, line, "reading item " + key.Repr());
  if (obj.is_object()) {
    if (key.is_string()) {
      if (const Value* v = obj.object().Find(key.str())) return *v;
    }
    return Value::Undefined(key.ToString());
  }
  if ((obj.is_array() || obj.is_string()) && (key.is_int() || key.is_bool())) {
    int64_t i = key.as_int();
    Value one = Slice(obj, Value(i), i == -1 ? Value::None() : Value(i + 1), Value::None(), line);
    if (obj.is_array()) return one.array().empty() ? Value::Undefined("[" + key.ToString() + "]") : one.array()[0];
    return one.str().empty() ? Value::Undefined("[" + key.ToString() + "]") : one;
  }
  return Value::Undefined(key.ToString());
}

Value Interpreter::EvalCall(const Expr& e, Frame* frame) {
  std::vector<Value> args;
  KwArgs kwargs;
  if (e.a->kind == Expr::Kind::kAttr) {
    Value obj = Eval(*e.a->a, frame);
    EvalArgs(e, frame, &args, &kwargs);
    if (obj.is_object()) {
      const Value* member = obj.object().Find(e.a->name);
      if (member && member->is_callable()) return member->callable().fn(*this, args, kwargs, e.line);
    }
    bool found = true;
    Value r = CallMethod(*this, obj, e.a->name, args, kwargs, e.line, &found);
    if (found) return r;
    if (obj.is_undefined()) FailUndefined(obj, e.line, "calling '." + e.a->name + "()'");
    Fail(e.line, "'" + obj.TypeName() + "' object has no method '" + e.a->name + "'");
  }
  Value callee = Eval(*e.a, frame);
  EvalArgs(e, frame, &args, &kwargs);
  if (!callee.is_callable()) {
    if (callee.is_undefined()) FailUndefined(callee, e.line, "called as a function");
    Fail(e.line, "'" + callee.TypeName() + "' object is not callable");
  }
  return callee.callable().fn(*this, args, kwargs, e.line);
}

Value Interpreter::EvalBinary(const Expr& e, Frame* frame) {
  const std::string& op = e.name;
  Value a = Eval(*e.a, frame);
  Value b = Eval(*e.b, frame);
  if (op == "==") return Value(Equals(a, b));
  if (op == "!=") return Value(!Equals(a, b));
  if (op == "in") return Value(Contains(b, a, e.line));
  if (op == "notin") return Value(!Contains(b, a, e.line));
  if (op == "~") {
    std::string s = a.ToString();
    b.AppendTo(&s);
    return Value(std::move(s));
  }
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    bool ok = true;
    bool r;
    if (op == "<") r = LessThan(a, b, &ok);
    else if (op == ">") r = LessThan(b, a, &ok);
    else if (op == "<=") r = !LessThan(b, a, &ok);
    else r = !LessThan(a, b, &ok);
    if (!ok) FailOperands(op, a, b, e.line);
    return Value(r);
  }
  return Arith(op, a, b, e.line);
}

Value Interpreter::Eval(const Expr& e, Frame* frame) {
  Step(e.line);
  switch (e.kind) {
    case Expr::Kind::kLiteral: return e.value;
    case Expr::Kind::kName: return Lookup(e.name, frame);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      Array a;
      a.reserve(e.args.size());
      for (const auto& x : e.args) a.push_back(Eval(*x, frame));
      return Value(std::move(a));
    }
    case Expr::Kind::kDict: {
      auto o = std::make_shared<Object>();
      for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
        Value k = Eval(*e.args[i], frame);
        o->Set(k.is_string() ? k.str() : k.ToString(), Eval(*e.args[i + 1], frame));
      }
      return Value(std::move(o));
    }
    case Expr::Kind::kAttr: return GetAttr(Eval(*e.a, frame), e.name, e.line);
    case Expr::Kind::kItem: {
      Value obj = Eval(*e.a, frame);
      return GetItem(obj, Eval(*e.b, frame), e.line);
    }
    case Expr::Kind::kSlice: {
      Value obj = Eval(*e.a, frame);
      Value parts[3];
      for (int i = 0; i < 3; ++i) parts[i] = e.args[i] ? Eval(*e.args[i], frame) : Value::None();
      return Slice(obj, parts[0], parts[1], parts[2], e.line);
    }
    case Expr::Kind::kCall: return EvalCall(e, frame);
    case Expr::Kind::kFilter: {
      Value input = e.a ? Eval(*e.a, frame) : Value::Undefined();
      std::vector<Value> args;
      KwArgs kwargs;
      EvalArgs(e, frame, &args, &kwargs);
      return ApplyFilter(*this, e.name, std::move(input), args, kwargs, e.line);
    }
    case Expr::Kind::kTest: {
      Value input = Eval(*e.a, frame);
      std::vector<Value> args;
      KwArgs kwargs;
      EvalArgs(e, frame, &args, &kwargs);
      return Value(ApplyTest(*this, e.name, input, args, e.line) != e.negate);
    }
    case Expr::Kind::kNeg: {
      Value v = Eval(*e.a, frame);
      if (v.is_int() || v.is_bool()) return Value(static_cast<int64_t>(0 - static_cast<uint64_t>(v.as_int())));
      if (v.is_float()) return Value(-v.as_double());
      if (v.is_undefined()) FailUndefined(v, e.line, "unary -");
      Fail(e.line, "bad operand type for unary -: '" + v.TypeName() + "'");
    }
    case Expr::Kind::kPos: {
      Value v = Eval(*e.a, frame);
      if (!v.is_number()) Fail(e.line, "bad operand type for unary +: '" + v.TypeName() + "'");
      return v;
    }
    case Expr::Kind::kNot: return Value(!Eval(*e.a, frame).Truthy());
    case Expr::Kind::kAnd: {
      Value a = Eval(*e.a, frame);
      return a.Truthy() ? Eval(*e.b, frame) : a;
    }
    case Expr::Kind::kOr: {
      Value a = Eval(*e.a, frame);
      return a.Truthy() ? a : Eval(*e.b, frame);
    }
    case Expr::Kind::kCond:
      if (Eval(*e.b, frame).Truthy()) return Eval(*e.a, frame);
      return e.c ? Eval(*e.c, frame) : Value::Undefined();
    case Expr::Kind::kBinary: return EvalBinary(e, frame);
  }
  return Value::Undefined();
}

StatusOr<Template> Template::Parse(std::string_view source) {
  ASSIGN_OR_RETURN(auto program, ParseProgram(source));
  return Template(std::move(program));
}

StatusOr<std::string> Template::Render(const Value& context, const RenderLimits& limits) const {
  std::string out;
  Interpreter in(limits, &out);
  Frame root;
  if (context.is_object()) {
    for (const auto& [k, v] : context.object().items) root.vars[k] = v;
  }
  in.set_root(&root);
  try {
    in.RenderBody(program_->body, &root);
  } catch (const RenderError& e) {
    return InvalidArgumentError("template line " + std::to_string(e.line) + ": " + e.message);
  }
  return out;
}

}  // namespace crescent::jinja
