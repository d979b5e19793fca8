// Value: the data model of the Jinja interpreter, Python-like (None, bool,
// int, float, str, list, dict, callables) plus Jinja's Undefined.
//
// Copying a Value is cheap: scalars are inline, strings are shared immutable
// buffers and lists/dicts are shared by reference, as in Python (a namespace
// or list mutated through one Value is seen through every copy). Dicts keep
// insertion order, like Python dicts, which matters for tojson and items().
//
// Thread safety: a Value is not synchronized; values built from shared
// read-only inputs are never mutated by rendering (only the template's own
// lists and namespaces are), so one input may be rendered by many threads.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace crescent::jinja {

class Value;
using Array = std::vector<Value>;

// Ordered dict. Chat-template dicts have a handful of keys, so a vector with
// linear lookup beats a hash map.
struct Object {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;  // `set ns.attr = ...` is only allowed on namespace()

  const Value* Find(std::string_view key) const;
  void Set(std::string_view key, Value value);
};

struct Callable;

class Value {
 public:
  enum class Kind : uint8_t { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kCallable };

  Value() = default;  // Undefined
  static Value Undefined(std::string name = "");
  static Value None();
  Value(bool b) : data_(b) {}                   // NOLINT implicit
  Value(int v) : data_(int64_t{v}) {}           // NOLINT
  Value(int64_t v) : data_(v) {}                // NOLINT
  Value(double v) : data_(v) {}                 // NOLINT
  Value(std::string s);                         // NOLINT
  Value(std::string_view s) : Value(std::string(s)) {}  // NOLINT
  Value(const char* s) : Value(std::string(s)) {}        // NOLINT
  Value(Array a);                               // NOLINT
  Value(std::shared_ptr<Array> a) : data_(std::move(a)) {}    // NOLINT
  Value(std::shared_ptr<Object> o) : data_(std::move(o)) {}   // NOLINT
  Value(std::shared_ptr<Callable> f) : data_(std::move(f)) {} // NOLINT

  // From JSON (ordered_json keeps the caller's key order; json sorts keys).
  static Value FromJson(const nlohmann::ordered_json& j);
  static Value FromJson(const nlohmann::json& j);

  Kind kind() const;
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_bool() const { return kind() == Kind::kBool; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_float() const { return kind() == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_array() const { return kind() == Kind::kArray; }
  bool is_object() const { return kind() == Kind::kObject; }
  bool is_callable() const { return kind() == Kind::kCallable; }

  bool as_bool() const { return std::get<bool>(data_); }
  int64_t as_int() const;    // bool and int
  double as_double() const;  // bool, int, float
  const std::string& str() const { return *std::get<std::shared_ptr<const std::string>>(data_); }
  Array& array() const { return *std::get<std::shared_ptr<Array>>(data_); }
  Object& object() const { return *std::get<std::shared_ptr<Object>>(data_); }
  const std::shared_ptr<Object>& object_ptr() const { return std::get<std::shared_ptr<Object>>(data_); }
  Callable& callable() const { return *std::get<std::shared_ptr<Callable>>(data_); }
  // Name an Undefined was looked up under, for error messages.
  const std::string& undefined_name() const;

  // Python truthiness (Undefined is false).
  bool Truthy() const;
  // str(value): what {{ value }} prints.
  std::string ToString() const;
  void AppendTo(std::string* out) const;
  // repr(value) as Python prints it inside containers: 'a', [1, 'b'], {'k': None}.
  std::string Repr() const;
  // json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=sort_keys)
  // with Python's separators; indent < 0 means none. Returns false for a
  // value JSON cannot hold (Undefined, callables).
  bool ToJson(int indent, bool sort_keys, std::string* out) const;
  // Python type name ("str", "int", "dict", ...), for error messages.
  std::string TypeName() const;

 private:
  struct UndefinedTag {
    std::shared_ptr<const std::string> name;
  };
  struct NoneTag {};
  std::variant<UndefinedTag, NoneTag, bool, int64_t, double, std::shared_ptr<const std::string>,
               std::shared_ptr<Array>, std::shared_ptr<Object>, std::shared_ptr<Callable>>
      data_;
};

// Python ==, with 1 == 1.0 == True.
bool Equals(const Value& a, const Value& b);
// Python <: numbers with numbers, str with str, lists elementwise. Returns
// false in *ok for types that do not order.
bool LessThan(const Value& a, const Value& b, bool* ok);

// Python's repr of a float ("1.0", "0.1", "1e+16").
std::string FormatDouble(double d);

// Number of code points (what Python's len() of a str counts).
size_t CodePointCount(std::string_view s);

}  // namespace crescent::jinja
