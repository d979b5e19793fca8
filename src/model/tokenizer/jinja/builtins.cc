// Filters, tests, methods and global functions. Each behaves like its
// Jinja2 / Python counterpart for the argument types chat templates pass;
// other types fail with an error naming the filter and the type.
//
// Filters: abs attr capitalize count d default dictsort e escape first float
//   indent int items join last length list lower map max min reject
//   rejectattr replace reverse round safe select selectattr sort string sum
//   title tojson trim unique upper wordcount
// Tests: boolean callable defined divisibleby eq equalto even false float ge
//   gt greaterthan in integer iterable le lessthan lower lt mapping ne none
//   number odd sameas sequence string true undefined upper == != < > <= >=
// str methods: startswith endswith split rsplit strip lstrip rstrip replace
//   upper lower title capitalize find rfind count join format isdigit isalpha
//   isspace isupper islower splitlines
// dict methods: items keys values get;  list methods: append pop index count
// Globals: range namespace dict raise_exception strftime_now
#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>

#include "model/tokenizer/jinja/interpreter.h"

namespace crescent::jinja {
namespace {

using Args = std::vector<Value>;

[[noreturn]] void Fail(int line, const std::string& msg) { Interpreter::Fail(line, msg); }

const Value& Arg(const Args& args, const KwArgs& kwargs, size_t i, const char* name, const Value& fallback) {
  for (const auto& [k, v] : kwargs) {
    if (k == name) return v;
  }
  return i < args.size() ? args[i] : fallback;
}

const std::string& Str(const Value& v, const std::string& what, int line) {
  if (!v.is_string()) Fail(line, what + " needs a string, got " + v.TypeName());
  return v.str();
}

// Offsets of code points, plus the end: s.substr(off[i], off[j]-off[i]) is cp i..j.
std::vector<size_t> CodePointOffsets(const std::string& s) {
  std::vector<size_t> off;
  off.reserve(s.size() + 1);
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) off.push_back(i);
  }
  off.push_back(s.size());
  return off;
}

bool IsPySpace(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r') || c == 0x1c || c == 0x1d || c == 0x1e || c == 0x1f; }

std::string StripChars(const std::string& s, const Value& chars, bool left, bool right) {
  auto strip = [&](unsigned char c) {
    return chars.is_string() ? chars.str().find(static_cast<char>(c)) != std::string::npos : IsPySpace(c);
  };
  size_t b = 0, e = s.size();
  if (left) {
    while (b < e && strip(s[b])) ++b;
  }
  if (right) {
    while (e > b && strip(s[e - 1])) --e;
  }
  return s.substr(b, e - b);
}

Value Split(const std::string& s, const Value& sep, int64_t maxsplit, int line) {
  Array out;
  if (sep.is_none() || sep.is_undefined()) {  // split on runs of whitespace
    size_t i = 0;
    while (i < s.size()) {
      while (i < s.size() && IsPySpace(s[i])) ++i;
      if (i >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
        size_t e = s.size();
        while (e > i && IsPySpace(s[e - 1])) --e;
        out.push_back(Value(s.substr(i, e - i)));
        break;
      }
      size_t j = i;
      while (j < s.size() && !IsPySpace(s[j])) ++j;
      out.push_back(Value(s.substr(i, j - i)));
      i = j;
    }
    return Value(std::move(out));
  }
  const std::string& d = Str(sep, "split separator", line);
  if (d.empty()) Fail(line, "split(): empty separator");
  size_t start = 0;
  while (true) {
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) break;
    size_t p = s.find(d, start);
    if (p == std::string::npos) break;
    out.push_back(Value(s.substr(start, p - start)));
    start = p + d.size();
  }
  out.push_back(Value(s.substr(start)));
  return Value(std::move(out));
}

std::string Replace(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  std::string out;
  size_t start = 0;
  int64_t n = 0;
  if (from.empty()) {  // Python inserts `to` between every character
    auto off = CodePointOffsets(s);
    for (size_t i = 0; i + 1 < off.size(); ++i) {
      if (count < 0 || n++ < count) out += to;
      out += s.substr(off[i], off[i + 1] - off[i]);
    }
    if (count < 0 || n < count) out += to;
    return out;
  }
  while (count < 0 || n < count) {
    size_t p = s.find(from, start);
    if (p == std::string::npos) break;
    out.append(s, start, p - start);
    out += to;
    start = p + from.size();
    ++n;
  }
  out.append(s, start, std::string::npos);
  return out;
}

std::string CaseMap(const std::string& s, int mode) {  // 0 lower, 1 upper (ASCII)
  std::string r = s;
  for (char& c : r) c = static_cast<char>(mode ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
  return r;
}

std::string Title(const std::string& s) {
  std::string r = s;
  bool prev_alpha = false;
  for (char& c : r) {
    const auto u = static_cast<unsigned char>(c);
    const bool alpha = std::isalpha(u);
    c = static_cast<char>(alpha ? (prev_alpha ? std::tolower(u) : std::toupper(u)) : u);
    prev_alpha = alpha || u >= 0x80;
  }
  return r;
}

std::string Capitalize(const std::string& s) {
  std::string r = CaseMap(s, 0);
  if (!r.empty()) r[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(r[0])));
  return r;
}

// item.attr or item["attr"], with dotted paths ("function.name").
Value AttrPath(const Value& item, const std::string& path) {
  Value v = item;
  size_t start = 0;
  while (start <= path.size()) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!v.is_object()) return Value::Undefined(part);
    const Value* f = v.object().Find(part);
    if (!f) return Value::Undefined(part);
    v = *f;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return v;
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

Value Length(const Value& v, int line) {
  switch (v.kind()) {
    case Value::Kind::kString: return Value(static_cast<int64_t>(CodePointCount(v.str())));
    case Value::Kind::kArray: return Value(static_cast<int64_t>(v.array().size()));
    case Value::Kind::kObject: return Value(static_cast<int64_t>(v.object().items.size()));
    case Value::Kind::kUndefined: return Value(int64_t{0});
    default: Fail(line, "object of type '" + v.TypeName() + "' has no length");
  }
}

void SortValues(std::vector<Value>* items, const std::string& attribute, bool reverse, bool case_sensitive, int line) {
  auto key = [&](const Value& v) {
    Value k = attribute.empty() ? v : AttrPath(v, attribute);
    if (!case_sensitive && k.is_string()) return Value(CaseMap(k.str(), 0));
    return k;
  };
  bool ok = true;
  std::stable_sort(items->begin(), items->end(), [&](const Value& a, const Value& b) {
    bool pair_ok = true;
    const bool r = reverse ? LessThan(key(b), key(a), &pair_ok) : LessThan(key(a), key(b), &pair_ok);
    ok &= pair_ok;
    return r;
  });
  if (!ok) Fail(line, "sort: values of these types cannot be ordered");
}

}  // namespace

std::vector<Value> Iterate(const Value& v, int line) {
  switch (v.kind()) {
    case Value::Kind::kArray: return v.array();
    case Value::Kind::kObject: {
      std::vector<Value> keys;
      for (const auto& kv : v.object().items) keys.push_back(Value(kv.first));
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> chars;
      auto off = CodePointOffsets(v.str());
      for (size_t i = 0; i + 1 < off.size(); ++i) chars.push_back(Value(v.str().substr(off[i], off[i + 1] - off[i])));
      return chars;
    }
    case Value::Kind::kUndefined: return {};
    default: Fail(line, "'" + v.TypeName() + "' object is not iterable");
  }
}

Value Slice(const Value& v, const Value& start, const Value& stop, const Value& step, int line) {
  if (!v.is_array() && !v.is_string()) {
    if (v.is_undefined()) Fail(line, "'" + v.undefined_name() + "' is undefined (slicing)");
    Fail(line, "'" + v.TypeName() + "' object is not subscriptable");
  }
  std::vector<size_t> off;
  int64_t n;
  if (v.is_string()) {
    off = CodePointOffsets(v.str());
    n = static_cast<int64_t>(off.size()) - 1;
  } else {
    n = static_cast<int64_t>(v.array().size());
  }
  auto as_index = [&](const Value& x, const char* what) -> std::optional<int64_t> {
    if (x.is_none() || x.is_undefined()) return std::nullopt;
    if (!x.is_int() && !x.is_bool()) Fail(line, std::string("slice ") + what + " must be an integer, got " + x.TypeName());
    return x.as_int();
  };
  const int64_t st = as_index(step, "step").value_or(1);
  if (st == 0) Fail(line, "slice step cannot be zero");
  auto clamp = [&](std::optional<int64_t> i, int64_t dflt) {
    if (!i) return dflt;
    int64_t x = *i < 0 ? *i + n : *i;
    if (st > 0) return std::clamp<int64_t>(x, 0, n);
    return std::clamp<int64_t>(x, -1, n - 1);
  };
  const int64_t b = clamp(as_index(start, "start"), st > 0 ? 0 : n - 1);
  const int64_t e = clamp(as_index(stop, "stop"), st > 0 ? n : -1);
  if (v.is_string()) {
    const std::string& s = v.str();
    if (st == 1) return Value(b < e ? s.substr(off[b], off[e] - off[b]) : std::string());
    std::string out;
    for (int64_t i = b; st > 0 ? i < e : i > e; i += st) out.append(s, off[i], off[i + 1] - off[i]);
    return Value(std::move(out));
  }
  Array out;
  const Array& a = v.array();
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) out.push_back(a[i]);
  return Value(std::move(out));
}

Value ApplyFilter(Interpreter& in, const std::string& name, Value input, Args& args, KwArgs& kwargs, int line) {
  static const Value kNone = Value::None();
  const std::string ctx = "filter '" + name + "'";
  if (name == "tojson") {
    const Value& indent = Arg(args, kwargs, 0, "indent", kNone);
    std::string out;
    if (!input.ToJson(indent.is_int() ? static_cast<int>(std::clamp<int64_t>(indent.as_int(), 0, 64)) : -1,
                      Arg(args, kwargs, 99, "sort_keys", Value(false)).Truthy(), &out)) {
      if (input.is_undefined()) Fail(line, "'" + input.undefined_name() + "' is undefined (" + ctx + ")");
      Fail(line, "Object of type " + input.TypeName() + " is not JSON serializable (" + ctx + ")");
    }
    return Value(std::move(out));
  }
  if (name == "trim") return Value(StripChars(Str(input, ctx, line), Arg(args, kwargs, 0, "chars", kNone), true, true));
  if (name == "length" || name == "count") return Length(input, line);
  if (name == "string") return input.is_string() ? input : Value(input.ToString());
  if (name == "safe") return input;
  if (name == "e" || name == "escape") return Value(Escape(input.ToString()));
  if (name == "upper") return Value(CaseMap(Str(input, ctx, line), 1));
  if (name == "lower") return Value(CaseMap(Str(input, ctx, line), 0));
  if (name == "title") return Value(Title(Str(input, ctx, line)));
  if (name == "capitalize") return Value(Capitalize(Str(input, ctx, line)));
  if (name == "wordcount") return Value(static_cast<int64_t>(Split(Str(input, ctx, line), kNone, -1, line).array().size()));
  if (name == "replace") {
    const Value& count = Arg(args, kwargs, 2, "count", kNone);
    return Value(Replace(Str(input, ctx, line), Str(Arg(args, kwargs, 0, "old", kNone), ctx, line),
                         Str(Arg(args, kwargs, 1, "new", kNone), ctx, line), count.is_int() ? count.as_int() : -1));
  }
  if (name == "d" || name == "default") {
    const Value& dflt = Arg(args, kwargs, 0, "default_value", Value(""));
    const bool boolean = Arg(args, kwargs, 1, "boolean", Value(false)).Truthy();
    return input.is_undefined() || (boolean && !input.Truthy()) ? dflt : input;
  }
  if (name == "join") {
    const std::string sep = Arg(args, kwargs, 0, "d", Value("")).ToString();
    const Value& attribute = Arg(args, kwargs, 1, "attribute", kNone);
    std::string out;
    bool first = true;
    for (const Value& v : Iterate(input, line)) {
      if (!first) out += sep;
      first = false;
      (attribute.is_string() ? AttrPath(v, attribute.str()) : v).AppendTo(&out);
    }
    return Value(std::move(out));
  }
  if (name == "items" || name == "dictsort") {
    if (input.is_undefined()) return Value(Array{});
    if (!input.is_object()) Fail(line, ctx + " needs a dict, got " + input.TypeName());
    Array out;
    for (const auto& [k, v] : input.object().items) out.push_back(Value(Array{Value(k), v}));
    if (name == "dictsort") SortValues(&out, "0", false, false, line);
    return Value(std::move(out));
  }
  if (name == "list") return Value(Iterate(input, line));
  if (name == "first" || name == "last") {
    std::vector<Value> items = Iterate(input, line);
    if (items.empty()) return Value::Undefined(name);
    return name == "first" ? items.front() : items.back();
  }
  if (name == "reverse") {
    if (input.is_string()) return Slice(input, kNone, kNone, Value(-1), line);
    std::vector<Value> items = Iterate(input, line);
    std::reverse(items.begin(), items.end());
    return Value(std::move(items));
  }
  if (name == "sort") {
    std::vector<Value> items = Iterate(input, line);
    const Value& attribute = Arg(args, kwargs, 2, "attribute", kNone);
    SortValues(&items, attribute.is_string() ? attribute.str() : "", Arg(args, kwargs, 0, "reverse", Value(false)).Truthy(),
               Arg(args, kwargs, 1, "case_sensitive", Value(false)).Truthy(), line);
    return Value(std::move(items));
  }
  if (name == "unique") {
    Array out;
    for (const Value& v : Iterate(input, line)) {
      bool seen = false;
      for (const Value& o : out) seen |= Equals(o, v);
      if (!seen) out.push_back(v);
    }
    return Value(std::move(out));
  }
  if (name == "min" || name == "max") {
    std::vector<Value> items = Iterate(input, line);
    if (items.empty()) return Value::Undefined(name);
    SortValues(&items, "", false, false, line);
    return name == "min" ? items.front() : items.back();
  }
  if (name == "sum") {
    Value total = Arg(args, kwargs, 1, "start", Value(int64_t{0}));
    const Value& attribute = Arg(args, kwargs, 0, "attribute", kNone);
    for (const Value& v : Iterate(input, line)) {
      const Value x = attribute.is_string() ? AttrPath(v, attribute.str()) : v;
      if (!x.is_number() || !total.is_number()) Fail(line, ctx + " needs numbers");
      total = total.is_float() || x.is_float() ? Value(total.as_double() + x.as_double()) : Value(total.as_int() + x.as_int());
    }
    return total;
  }
  if (name == "int") {
    if (input.is_number()) return Value(input.as_int());
    if (input.is_string()) {
      try {
        return Value(static_cast<int64_t>(std::stoll(StripChars(input.str(), kNone, true, true))));
      } catch (...) {
      }
    }
    return Arg(args, kwargs, 0, "default", Value(int64_t{0}));
  }
  if (name == "float") {
    if (input.is_number()) return Value(input.as_double());
    if (input.is_string()) {
      try {
        return Value(std::stod(input.str()));
      } catch (...) {
      }
    }
    return Arg(args, kwargs, 0, "default", Value(0.0));
  }
  if (name == "abs") {
    if (input.is_float()) return Value(std::fabs(input.as_double()));
    if (input.is_number()) return Value(input.as_int() < 0 ? -input.as_int() : input.as_int());
    Fail(line, ctx + " needs a number, got " + input.TypeName());
  }
  if (name == "round") {
    if (!input.is_number()) Fail(line, ctx + " needs a number, got " + input.TypeName());
    const int64_t precision = Arg(args, kwargs, 0, "precision", Value(int64_t{0})).as_int();
    const std::string method = Arg(args, kwargs, 1, "method", Value("common")).ToString();
    const double scale = std::pow(10.0, static_cast<double>(std::clamp<int64_t>(precision, -20, 20)));
    double x = input.as_double() * scale;
    x = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::round(x);
    return Value(x / scale);
  }
  if (name == "indent") {
    const Value& w = Arg(args, kwargs, 0, "width", Value(int64_t{4}));
    const std::string pad = w.is_string() ? w.str() : std::string(static_cast<size_t>(std::clamp<int64_t>(w.as_int(), 0, 256)), ' ');
    const bool first = Arg(args, kwargs, 1, "first", Value(false)).Truthy();
    const bool blank = Arg(args, kwargs, 2, "blank", Value(false)).Truthy();
    const std::string& s = Str(input, ctx, line);
    std::string out;
    size_t start = 0;
    bool first_line = true;
    while (start <= s.size()) {
      size_t nl = s.find('\n', start);
      std::string ln = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
      if ((!first_line || first) && (blank || !ln.empty())) out += pad;
      out += ln;
      if (nl == std::string::npos) break;
      out += '\n';
      start = nl + 1;
      first_line = false;
    }
    return Value(std::move(out));
  }
  if (name == "attr") return AttrPath(input, Str(Arg(args, kwargs, 0, "name", kNone), ctx, line));
  if (name == "map") {
    Array out;
    const Value& attribute = Arg(args, kwargs, 99, "attribute", kNone);
    for (const Value& v : Iterate(input, line)) {
      if (attribute.is_string()) {
        Value r = AttrPath(v, attribute.str());
        out.push_back(r.is_undefined() ? Arg(args, kwargs, 99, "default", r) : r);
      } else {
        if (args.empty() || !args[0].is_string()) Fail(line, "filter 'map' needs a filter name or attribute=");
        Args rest(args.begin() + 1, args.end());
        KwArgs none;
        out.push_back(ApplyFilter(in, args[0].str(), v, rest, none, line));
      }
    }
    return Value(std::move(out));
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    const bool by_attr = name.size() > 6;
    const bool want = name[0] == 's';
    Array out;
    for (const Value& v : Iterate(input, line)) {
      Value subject = v;
      size_t test_at = 0;
      if (by_attr) {
        if (args.empty() || !args[0].is_string()) Fail(line, ctx + " needs an attribute name");
        subject = AttrPath(v, args[0].str());
        test_at = 1;
      }
      bool ok;
      if (args.size() > test_at) {
        if (!args[test_at].is_string()) Fail(line, ctx + " needs a test name");
        Args rest(args.begin() + static_cast<long>(test_at) + 1, args.end());
        ok = ApplyTest(in, args[test_at].str(), subject, rest, line);
      } else {
        ok = subject.Truthy();
      }
      if (ok == want) out.push_back(v);
    }
    return Value(std::move(out));
  }
  Fail(line, "unknown filter '" + name + "'");
}

bool ApplyTest(Interpreter& in, const std::string& name, const Value& v, Args& args, int line) {
  auto arg0 = [&]() -> const Value& {
    if (args.empty()) Fail(line, "test '" + name + "' needs an argument");
    return args[0];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_int() || v.is_float();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "mapping") return v.is_object();
  if (name == "sequence") return v.is_array() || v.is_string() || v.is_object();
  if (name == "iterable") return v.is_array() || v.is_string() || v.is_object();
  if (name == "callable") return v.is_callable();
  if (name == "lower") return v.is_string() && CaseMap(v.str(), 0) == v.str();
  if (name == "upper") return v.is_string() && CaseMap(v.str(), 1) == v.str();
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!v.is_int() && !v.is_bool()) Fail(line, "test '" + name + "' needs an integer, got " + v.TypeName());
    const int64_t d = name == "divisibleby" ? arg0().as_int() : 2;
    if (d == 0) Fail(line, "test 'divisibleby' by zero");
    const bool divisible = v.as_int() % d == 0;
    return name == "odd" ? !divisible : divisible;
  }
  if (name == "eq" || name == "equalto" || name == "==") return Equals(v, arg0());
  if (name == "ne" || name == "!=") return !Equals(v, arg0());
  if (name == "sameas") {
    const Value& o = arg0();
    if (v.kind() != o.kind()) return false;
    if (v.is_array()) return &v.array() == &o.array();
    if (v.is_object()) return &v.object() == &o.object();
    return Equals(v, o);
  }
  if (name == "in") {
    const Value& c = arg0();
    if (c.is_string() && v.is_string()) return c.str().find(v.str()) != std::string::npos;
    for (const Value& x : Iterate(c, line)) {
      if (Equals(x, v)) return true;
    }
    return false;
  }
  static const std::vector<std::pair<std::vector<std::string>, int>> kCompare = {
      {{"lt", "lessthan", "<"}, 0}, {{"le", "<="}, 1}, {{"gt", "greaterthan", ">"}, 2}, {{"ge", ">="}, 3}};
  for (const auto& [names, op] : kCompare) {
    if (std::find(names.begin(), names.end(), name) == names.end()) continue;
    bool ok = true;
    const Value& o = arg0();
    bool r = op == 0 ? LessThan(v, o, &ok) : op == 1 ? !LessThan(o, v, &ok) : op == 2 ? LessThan(o, v, &ok) : !LessThan(v, o, &ok);
    if (!ok) Fail(line, "test '" + name + "': '" + v.TypeName() + "' and '" + o.TypeName() + "' do not compare");
    return r;
  }
  Fail(line, "unknown test '" + name + "'");
}

Value CallMethod(Interpreter& in, const Value& obj, const std::string& name, Args& args, KwArgs& kwargs, int line,
                 bool* found) {
  static const Value kNone = Value::None();
  *found = true;
  const std::string ctx = "str." + name + "()";
  if (obj.is_string()) {
    const std::string& s = obj.str();
    if (name == "startswith" || name == "endswith") {
      const Value& p = Arg(args, kwargs, 0, "prefix", kNone);
      std::vector<Value> options = p.is_array() ? p.array() : std::vector<Value>{p};
      for (const Value& o : options) {
        const std::string& x = Str(o, ctx, line);
        if (name[0] == 's' ? s.compare(0, x.size(), x) == 0 && s.size() >= x.size()
                           : s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0) {
          return Value(true);
        }
      }
      return Value(false);
    }
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      return Value(StripChars(s, Arg(args, kwargs, 0, "chars", kNone), name[0] != 'r', name[0] != 'l'));
    }
    if (name == "split" || name == "rsplit") {
      const Value& maxsplit = Arg(args, kwargs, 1, "maxsplit", Value(int64_t{-1}));
      if (name == "rsplit" && maxsplit.as_int() >= 0) {
        // rsplit with a limit: split all, then rejoin the leading parts.
        Value all = Split(s, Arg(args, kwargs, 0, "sep", kNone), -1, line);
        Array& parts = all.array();
        const int64_t keep = maxsplit.as_int();
        if (static_cast<int64_t>(parts.size()) <= keep + 1) return all;
        const std::string sep = Arg(args, kwargs, 0, "sep", kNone).is_string() ? Arg(args, kwargs, 0, "sep", kNone).str() : " ";
        std::string head;
        const size_t head_n = parts.size() - static_cast<size_t>(keep);
        for (size_t i = 0; i < head_n; ++i) head += (i ? sep : "") + parts[i].str();
        Array out{Value(head)};
        out.insert(out.end(), parts.begin() + static_cast<long>(head_n), parts.end());
        return Value(std::move(out));
      }
      return Split(s, Arg(args, kwargs, 0, "sep", kNone), maxsplit.as_int(), line);
    }
    if (name == "splitlines") {
      Array out;
      size_t start = 0;
      while (start < s.size()) {
        size_t nl = s.find_first_of("\r\n", start);
        if (nl == std::string::npos) {
          out.push_back(Value(s.substr(start)));
          break;
        }
        out.push_back(Value(s.substr(start, nl - start)));
        start = nl + ((s[nl] == '\r' && nl + 1 < s.size() && s[nl + 1] == '\n') ? 2 : 1);
      }
      return Value(std::move(out));
    }
    if (name == "replace") {
      const Value& count = Arg(args, kwargs, 2, "count", Value(int64_t{-1}));
      return Value(Replace(s, Str(Arg(args, kwargs, 0, "old", kNone), ctx, line),
                           Str(Arg(args, kwargs, 1, "new", kNone), ctx, line), count.as_int()));
    }
    if (name == "upper") return Value(CaseMap(s, 1));
    if (name == "lower") return Value(CaseMap(s, 0));
    if (name == "title") return Value(Title(s));
    if (name == "capitalize") return Value(Capitalize(s));
    if (name == "find" || name == "rfind" || name == "count") {
      const std::string& x = Str(Arg(args, kwargs, 0, "sub", kNone), ctx, line);
      if (name == "count") {
        if (x.empty()) return Value(static_cast<int64_t>(CodePointCount(s) + 1));
        int64_t n = 0;
        for (size_t p = s.find(x); p != std::string::npos; p = s.find(x, p + x.size())) ++n;
        return Value(n);
      }
      const size_t p = name == "find" ? s.find(x) : s.rfind(x);
      return Value(p == std::string::npos ? int64_t{-1} : static_cast<int64_t>(CodePointCount(s.substr(0, p))));
    }
    if (name == "join") {
      std::string out;
      bool first = true;
      for (const Value& v : Iterate(Arg(args, kwargs, 0, "iterable", kNone), line)) {
        if (!first) out += s;
        first = false;
        out += Str(v, ctx, line);
      }
      return Value(std::move(out));
    }
    if (name == "format") {
      std::string out;
      size_t next = 0;
      for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '{' && i + 1 < s.size() && s[i + 1] == '}') {
          if (next >= args.size()) Fail(line, ctx + ": not enough arguments");
          args[next++].AppendTo(&out);
          ++i;
        } else {
          out += s[i];
        }
      }
      return Value(std::move(out));
    }
    auto all_of = [&](auto pred) {
      if (s.empty()) return Value(false);
      for (unsigned char c : s) {
        if (!pred(c)) return Value(false);
      }
      return Value(true);
    };
    if (name == "isdigit") return all_of([](unsigned char c) { return std::isdigit(c) != 0; });
    if (name == "isalpha") return all_of([](unsigned char c) { return std::isalpha(c) != 0; });
    if (name == "isspace") return all_of([](unsigned char c) { return IsPySpace(c); });
    if (name == "isupper") return Value(CaseMap(s, 1) == s && CaseMap(s, 0) != s);
    if (name == "islower") return Value(CaseMap(s, 0) == s && CaseMap(s, 1) != s);
  } else if (obj.is_object()) {
    const Object& o = obj.object();
    if (name == "items") {
      Array out;
      for (const auto& [k, v] : o.items) out.push_back(Value(Array{Value(k), v}));
      return Value(std::move(out));
    }
    if (name == "keys" || name == "values") {
      Array out;
      for (const auto& [k, v] : o.items) out.push_back(name == "keys" ? Value(k) : v);
      return Value(std::move(out));
    }
    if (name == "get") {
      const Value& key = Arg(args, kwargs, 0, "key", kNone);
      const Value* v = key.is_string() ? o.Find(key.str()) : nullptr;
      return v ? *v : Arg(args, kwargs, 1, "default", kNone);
    }
    if (name == "cycle" && o.Find("index0") && o.Find("length")) {  // loop.cycle(a, b, ...)
      if (args.empty()) Fail(line, "loop.cycle() needs at least one value");
      return args[static_cast<size_t>(o.Find("index0")->as_int()) % args.size()];
    }
  } else if (obj.is_array()) {
    Array& a = obj.array();
    if (name == "append") {
      if (a.size() > (size_t{1} << 24)) Fail(line, "list.append(): list is too long");
      a.push_back(Arg(args, kwargs, 0, "object", kNone));
      return Value::None();
    }
    if (name == "pop") {
      if (a.empty()) Fail(line, "pop from empty list");
      int64_t i = args.empty() ? -1 : args[0].as_int();
      if (i < 0) i += static_cast<int64_t>(a.size());
      if (i < 0 || i >= static_cast<int64_t>(a.size())) Fail(line, "pop index out of range");
      Value v = a[static_cast<size_t>(i)];
      a.erase(a.begin() + i);
      return v;
    }
    if (name == "index" || name == "count") {
      const Value& x = Arg(args, kwargs, 0, "value", kNone);
      int64_t n = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        if (!Equals(a[i], x)) continue;
        if (name == "index") return Value(static_cast<int64_t>(i));
        ++n;
      }
      if (name == "index") Fail(line, "list.index(x): x not in list");
      return Value(n);
    }
  }
  *found = false;
  return Value::Undefined();
}

const Value* GlobalFunction(const std::string& name) {
  static const auto* globals = [] {
    auto* m = new std::unordered_map<std::string, Value>();
    auto add = [&](const std::string& n, auto fn) {
      auto c = std::make_shared<Callable>();
      c->name = n;
      c->fn = fn;
      (*m)[n] = Value(std::move(c));
    };
    add("range", [](Interpreter& in, Args& args, KwArgs&, int line) {
      int64_t start = 0, stop = 0, step = 1;
      for (const Value& a : args) {
        if (!a.is_int() && !a.is_bool()) Fail(line, "range() arguments must be integers");
      }
      if (args.size() == 1) stop = args[0].as_int();
      else if (args.size() >= 2) start = args[0].as_int(), stop = args[1].as_int();
      if (args.size() >= 3) step = args[2].as_int();
      if (args.empty() || args.size() > 3) Fail(line, "range() takes 1 to 3 arguments");
      if (step == 0) Fail(line, "range() step must not be zero");
      Array out;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        in.Step(line);
        out.push_back(Value(i));
      }
      return Value(std::move(out));
    });
    add("namespace", [](Interpreter&, Args& args, KwArgs& kwargs, int line) {
      auto o = std::make_shared<Object>();
      o->is_namespace = true;
      for (const Value& a : args) {
        if (!a.is_object()) Fail(line, "namespace() takes a dict or keyword arguments");
        for (const auto& [k, v] : a.object().items) o->Set(k, v);
      }
      for (auto& [k, v] : kwargs) o->Set(k, v);
      return Value(std::move(o));
    });
    add("dict", [](Interpreter&, Args& args, KwArgs& kwargs, int line) {
      auto o = std::make_shared<Object>();
      for (const Value& a : args) {
        if (!a.is_object()) Fail(line, "dict() takes a dict or keyword arguments");
        for (const auto& [k, v] : a.object().items) o->Set(k, v);
      }
      for (auto& [k, v] : kwargs) o->Set(k, v);
      return Value(std::move(o));
    });
    add("raise_exception", [](Interpreter&, Args& args, KwArgs&, int line) -> Value {
      Fail(line, "raise_exception: " + (args.empty() ? std::string("error") : args[0].ToString()));
    });
    add("strftime_now", [](Interpreter&, Args& args, KwArgs&, int line) {
      if (args.empty() || !args[0].is_string()) Fail(line, "strftime_now() needs a format string");
      const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof(buf), args[0].str().c_str(), &tm);
      return Value(std::string(buf, n));
    });
    return m;
  }();
  auto it = globals->find(name);
  return it == globals->end() ? nullptr : &it->second;
}

}  // namespace crescent::jinja
