// Helpers shared by the builtin filters, tests and methods (internal to
// jinja/): Python str semantics and value access used by several builtins.
#pragma once

#include <string>
#include <vector>

#include "model/tokenizer/jinja/interpreter.h"

namespace crescent::jinja {

using Args = std::vector<Value>;

[[noreturn]] inline void Fail(int line, const std::string& msg) { Interpreter::Fail(line, msg); }

// Keyword argument `name`, else positional argument i, else `fallback`.
const Value& Arg(const Args& args, const KwArgs& kwargs, size_t i, const char* name, const Value& fallback);
// v's string, or an error naming `what` for other types.
const std::string& Str(const Value& v, const std::string& what, int line);
// Byte offsets of the code points of s, plus s.size().
std::vector<size_t> CodePointOffsets(const std::string& s);
// Python's str.isspace() for one ASCII byte.
bool IsPySpace(unsigned char c);
// str.strip/lstrip/rstrip(chars); chars none = whitespace.
std::string StripChars(const std::string& s, const Value& chars, bool left, bool right);
// str.split(sep, maxsplit) (sep none = runs of whitespace); a list Value.
Value Split(const std::string& s, const Value& sep, int64_t maxsplit, int line);
// str.replace(old, new, count); count < 0 = all.
std::string Replace(const std::string& s, const std::string& from, const std::string& to, int64_t count);
// str.lower() (mode 0) / str.upper() (mode 1), Unicode simple case mapping.
std::string CaseMap(const std::string& s, int mode);
std::string Title(const std::string& s);
std::string Capitalize(const std::string& s);
// item.a.b (dict keys along a dotted path); Undefined when missing.
Value AttrPath(const Value& item, const std::string& path);
// HTML escaping as Jinja's escape filter does it.
std::string Escape(const std::string& s);
// len(v): code points of a str, items of a list or dict; 0 for Undefined.
Value Length(const Value& v, int line);
// Stable sort by value or by attribute path; fails on unorderable values.
void SortValues(std::vector<Value>* items, const std::string& attribute, bool reverse, bool case_sensitive, int line);

}  // namespace crescent::jinja
