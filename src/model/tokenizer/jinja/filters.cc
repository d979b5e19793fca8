// Jinja filters: {{ value | name(args) }}. The list of supported filters is
// in builtins.cc's header comment.
#include <algorithm>
#include <cmath>

#include "model/tokenizer/jinja/builtin_helpers.h"

namespace crescent::jinja {

Value ApplyFilter(Interpreter& in, const std::string& name, Value input, Args& args, KwArgs& kwargs, int line) {
  static const Value kNone = Value::None();
  const std::string ctx = "filter '" + name + "'";
  if (name == "tojson") {  // transformers' tojson: json.dumps(x, ensure_ascii=False, ...)
    Value::JsonOptions o;
    const Value& indent = Arg(args, kwargs, 1, "indent", kNone);
    if (indent.is_int()) o.indent = static_cast<int>(std::clamp<int64_t>(indent.as_int(), 0, 64));
    o.ensure_ascii = Arg(args, kwargs, 0, "ensure_ascii", Value(false)).Truthy();
    o.sort_keys = Arg(args, kwargs, 3, "sort_keys", Value(false)).Truthy();
    const Value& seps = Arg(args, kwargs, 2, "separators", kNone);
    if (seps.is_array() && seps.array().size() == 2) {
      o.item_separator = Str(seps.array()[0], ctx + " separators", line);
      o.key_separator = Str(seps.array()[1], ctx + " separators", line);
    }
    std::string out;
    if (!input.ToJson(o, &out)) {
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
    if (name == "dictsort") {  // by key, case-insensitively, as Jinja's default
      std::stable_sort(out.begin(), out.end(), [](const Value& a, const Value& b) {
        return CaseMap(a.array()[0].str(), 0) < CaseMap(b.array()[0].str(), 0);
      });
    }
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


}  // namespace crescent::jinja
