// The value type of the Jinja renderer: Python's None, bool, int, float, str, list, dict (insertion-ordered),
// plus jinja2's Undefined, a namespace() object and callables (macros, globals, bound methods). Printing,
// truthiness, equality, ordering and tojson follow Python/jinja2 so that renderings are byte-identical to
// transformers' apply_chat_template.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace reglage::chat {

struct Value;
using ValueList = std::vector<Value>;
// Insertion-ordered dict; lookups are linear (chat messages hold a handful of keys).
using ValueDict = std::vector<std::pair<Value, Value>>;

// Arguments of a call: positional, then keyword (in call order).
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};
using NativeFn = std::function<Value(const CallArgs&)>;

enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Callable };

struct Value {
  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;
  std::string s;                     // String; for Undefined: the name that was missing (for messages)
  std::shared_ptr<ValueList> list;   // List (immutable once built, so sharing is safe)
  bool tuple = false;                // a List that is a Python tuple: prints as (a, b)
  std::shared_ptr<ValueDict> dict;   // Dict, and Namespace (whose attributes are mutable through `set ns.x`)
  std::shared_ptr<NativeFn> fn;      // Callable

  static Value undefined(std::string name = "") { Value v; v.s = std::move(name); return v; }
  static Value none() { Value v; v.kind = Kind::None; return v; }
  static Value boolean(bool x) { Value v; v.kind = Kind::Bool; v.b = x; return v; }
  static Value integer(int64_t x) { Value v; v.kind = Kind::Int; v.i = x; return v; }
  static Value floating(double x) { Value v; v.kind = Kind::Float; v.f = x; return v; }
  static Value string(std::string x) { Value v; v.kind = Kind::String; v.s = std::move(x); return v; }
  static Value make_list(ValueList items);
  static Value make_tuple(ValueList items);
  static Value make_dict(ValueDict items);
  static Value make_namespace(ValueDict items);
  static Value callable(NativeFn fn);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
  bool is_list() const { return kind == Kind::List; }
  bool is_dict() const { return kind == Kind::Dict; }
  bool is_mapping() const { return kind == Kind::Dict || kind == Kind::Namespace; }

  // Dict/namespace lookup by string key; nullptr when absent.
  const Value* find(const std::string& key) const;
  // Python truthiness (Undefined is false).
  bool truthy() const;
  // Python's str(): what {{ x }} prints (Undefined prints "").
  std::string str() const;
  // Python's repr(): used inside printed lists and dicts.
  std::string repr() const;
  // jinja2's type name for messages ("str", "int", "dict", "NoneType", "Undefined"...).
  std::string type_name() const;
  double as_double() const;  // Int/Float/Bool as a double
};

// Python ==: 1 == 1.0 == True, lists and dicts compare by content; Undefined equals only Undefined.
bool values_equal(const Value& a, const Value& b);
// Python ordering for <, <=, >, >= and sort: numbers with numbers, strings with strings, lists
// lexicographically; sets `ok` false for other pairs (the caller raises a TypeError-like error).
int values_compare(const Value& a, const Value& b, bool& ok);

// Python's repr() of a float: shortest round-trip digits, "1.0", "1e-05", "1e+16", "inf", "nan".
std::string python_float_repr(double x);
// Python's repr() of a str: single quotes unless the text holds ' and no ".
std::string python_str_repr(const std::string& s);

// json.dumps(value, ensure_ascii, indent, separators, sort_keys) as Python writes it. indent < 0 means None.
// Undefined and callables are not serializable: returns false with `why` set.
struct JsonDumpOptions {
  bool ensure_ascii = false;
  int indent = -1;              // -1: no newlines
  std::string item_separator;   // default ", " without indent, "," with indent
  std::string key_separator = ": ";
  bool sort_keys = false;
};
bool python_json_dumps(const Value& v, const JsonDumpOptions& options, std::string& out, std::string& why);

// nlohmann::json -> Value (objects keep their key order only if the json was parsed as ordered_json;
// plain nlohmann::json sorts keys, as the caller's JSON library dictates).
Value value_from_json(const nlohmann::json& j);
Value value_from_json(const nlohmann::ordered_json& j);

// UTF-8 helpers: Python strings index by code point.
std::vector<uint32_t> utf8_decode(const std::string& s);
std::string utf8_encode(const std::vector<uint32_t>& cps, size_t begin, size_t end);
void utf8_append(std::string& out, uint32_t cp);
bool is_python_space(uint32_t cp);  // str.isspace()

}  // namespace reglage::chat
