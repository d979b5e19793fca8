// Tree-walking evaluation of a parsed template (internal to jinja/).
//
// Errors inside evaluation are thrown as RenderError and caught once, in
// Template::Render, which returns them as a Status: deep recursion through
// expressions would otherwise need a Status check after every call.
#pragma once

#include <functional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model/tokenizer/jinja/ast.h"
#include "model/tokenizer/jinja/template.h"

namespace crescent::jinja {

struct RenderError {
  int line;
  std::string message;
};

using KwArgs = std::vector<std::pair<std::string, Value>>;

class Interpreter;

// Something {{ f(...) }} can call: a macro, a global function, caller().
struct Callable {
  std::string name;
  std::function<Value(Interpreter&, std::vector<Value>& args, KwArgs& kwargs, int line)> fn;
};

// A scope: the template's top level, a loop, a macro call.
struct Frame {
  std::unordered_map<std::string, Value> vars;
  Frame* parent = nullptr;
};

class Interpreter {
 public:
  Interpreter(const RenderLimits& limits, std::string* out) : limits_(limits), out_(out) {}

  void RenderBody(const Body& body, Frame* frame);
  Value Eval(const Expr& e, Frame* frame);
  // Renders `body` into a string instead of the output (set blocks, macros).
  std::string Capture(const Body& body, Frame* frame);

  [[noreturn]] static void Fail(int line, std::string message) { throw RenderError{line, std::move(message)}; }
  void Step(int line);

  Frame* root() { return root_; }
  void set_root(Frame* root) { root_ = root; }

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  Flow RenderNodes(const Body& body, Frame* frame);
  Flow RenderNode(const Node& n, Frame* frame);
  void RenderFor(const Node& n, Frame* frame, bool* broke);
  void DefineMacro(const Node& n, Frame* frame);
  Value Lookup(const std::string& name, Frame* frame) const;
  void Assign(Frame* frame, const std::vector<std::string>& targets, Value v, int line);
  Value EvalBinary(const Expr& e, Frame* frame);
  Value EvalCall(const Expr& e, Frame* frame);
  Value GetAttr(const Value& obj, const std::string& name, int line);
  Value GetItem(const Value& obj, const Value& key, int line);
  void EvalArgs(const Expr& e, Frame* frame, std::vector<Value>* args, KwArgs* kwargs);

  const RenderLimits limits_;
  std::string* out_;
  Frame* root_ = nullptr;
  uint64_t steps_ = 0;
  int call_depth_ = 0;
};

// ---- builtins.cc ----

// Python-style iteration: list items, dict keys, string characters.
std::vector<Value> Iterate(const Value& v, int line);
// Slicing with Python semantics (strings by code point).
Value Slice(const Value& v, const Value& start, const Value& stop, const Value& step, int line);
Value ApplyFilter(Interpreter& in, const std::string& name, Value input, std::vector<Value>& args,
                  KwArgs& kwargs, int line);
bool ApplyTest(Interpreter& in, const std::string& name, const Value& input, std::vector<Value>& args, int line);
// obj.name(args): str/dict/list methods. Sets *found = false when `obj` has
// no such method.
Value CallMethod(Interpreter& in, const Value& obj, const std::string& name, std::vector<Value>& args,
                 KwArgs& kwargs, int line, bool* found);
// Global functions: range, namespace, dict, raise_exception, strftime_now, ...
const Value* GlobalFunction(const std::string& name);

}  // namespace crescent::jinja
