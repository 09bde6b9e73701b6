// jinja2's builtin filters and tests that chat templates use, with transformers' own `tojson`
// (json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)).
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "framework/chat/jinja_eval.h"
#include "framework/chat/jinja_ops.h"
#include "framework/chat/jinja_strings.h"

namespace reglage::chat {
namespace {

// make_attrgetter: "a.b.0" walks dict keys / attributes, integer parts index lists.
Value attr_path(const Value& item, const std::string& path) {
  Value v = item;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool numeric = !part.empty() && part.find_first_not_of("0123456789") == std::string::npos;
    v = numeric ? get_item(v, Value::integer(std::atoll(part.c_str()))) : get_item(v, Value::string(part));
    if (dot == std::string::npos) return v;
    start = dot + 1;
  }
}

int64_t value_length(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return 0;
    case Kind::String: return static_cast<int64_t>(py_len(v.s));
    case Kind::List: return static_cast<int64_t>(v.list->size());
    case Kind::Dict: case Kind::Namespace: return static_cast<int64_t>(v.dict->size());
    default: jinja_raise("object of type '" + v.type_name() + "' has no len()");
  }
}

Value filter_tojson(const Value& input, const CallArgs& args) {
  JsonDumpOptions o;
  o.ensure_ascii = arg_or(args, 0, "ensure_ascii", Value::boolean(false)).truthy();
  Value indent = arg_or(args, 1, "indent", Value::none());
  if (indent.kind == Kind::Int) o.indent = static_cast<int>(std::max<int64_t>(indent.i, 0));
  else if (!indent.is_none()) jinja_raise("indent must be an integer or None, not " + indent.type_name());
  Value separators = arg_or(args, 2, "separators", Value::none());
  if (separators.is_list() && separators.list->size() == 2 && (*separators.list)[0].is_string() &&
      (*separators.list)[1].is_string()) {
    o.item_separator = (*separators.list)[0].s;
    o.key_separator = (*separators.list)[1].s;
  } else if (!separators.is_none()) {
    jinja_raise("separators must be a (item_separator, key_separator) pair of strings");
  }
  o.sort_keys = arg_or(args, 3, "sort_keys", Value::boolean(false)).truthy();
  std::string out, why;
  if (!python_json_dumps(input, o, out, why)) jinja_raise(why);
  return Value::string(out);
}

// jinja2's int filter: int(value), else int(float(value)) for strings, else the default.
Value filter_int(const Value& input, const CallArgs& args) {
  Value fallback = arg_or(args, 0, "default", Value::integer(0));
  int base = static_cast<int>(arg_or(args, 1, "base", Value::integer(10)).i);
  switch (input.kind) {
    case Kind::Int: return input;
    case Kind::Bool: return Value::integer(input.b);
    case Kind::Float:
      if (!std::isfinite(input.f)) return fallback;
      return Value::integer(static_cast<int64_t>(input.f));
    case Kind::String: {
      std::string text = py_strip(input.s, StripSide::Both), clean;
      for (char c : text)
        if (c != '_') clean += c;
      if (clean.empty()) return fallback;
      char* end = nullptr;
      long long v = std::strtoll(clean.c_str(), &end, base);
      if (*end == '\0') return Value::integer(v);
      double d = std::strtod(clean.c_str(), &end);
      if (*end == '\0' && std::isfinite(d)) return Value::integer(static_cast<int64_t>(d));
      return fallback;
    }
    default: return fallback;
  }
}

Value filter_float(const Value& input, const CallArgs& args) {
  Value fallback = arg_or(args, 0, "default", Value::floating(0.0));
  if (input.is_number()) return Value::floating(input.as_double());
  if (input.is_string()) {
    std::string text = py_strip(input.s, StripSide::Both);
    char* end = nullptr;
    double d = std::strtod(text.c_str(), &end);
    if (!text.empty() && *end == '\0') return Value::floating(d);
  }
  return fallback;
}

// select/reject/selectattr/rejectattr: `test_index` is where the test name sits in the positional args.
Value select_filter(const Value& input, const CallArgs& args, bool by_attr, bool keep_when) {
  size_t test_index = by_attr ? 1 : 0;
  std::string attr;
  if (by_attr) {
    Value a = arg_or(args, 0, "attribute", Value::undefined());
    if (!a.is_string()) jinja_raise("the attribute name must be a string");
    attr = a.s;
  }
  std::string test;
  CallArgs test_args;
  if (args.positional.size() > test_index) {
    if (!args.positional[test_index].is_string()) jinja_raise("the test name must be a string");
    test = args.positional[test_index].s;
    if (!is_known_test(test)) jinja_raise("no test named '" + test + "'");
    test_args.positional.assign(args.positional.begin() + test_index + 1, args.positional.end());
  }
  ValueList kept;
  for (const auto& item : iterate(input)) {
    Value subject = by_attr ? attr_path(item, attr) : item;
    bool r = test.empty() ? subject.truthy() : apply_test(test, subject, test_args);
    if (r == keep_when) kept.push_back(item);
  }
  return Value::make_list(std::move(kept));
}

Value filter_map(const Value& input, const CallArgs& args) {
  ValueList out;
  Value attribute = arg_or(args, 1000, "attribute", Value::undefined());
  if (attribute.is_string()) {
    Value fallback = arg_or(args, 1000, "default", Value::undefined());
    for (const auto& item : iterate(input)) {
      Value v = attr_path(item, attribute.s);
      out.push_back(v.is_undefined() && !fallback.is_undefined() ? fallback : v);
    }
    return Value::make_list(std::move(out));
  }
  if (args.positional.empty() || !args.positional[0].is_string())
    jinja_raise("map needs a filter name or attribute=");
  std::string name = args.positional[0].s;
  if (!is_known_filter(name)) jinja_raise("no filter named '" + name + "'");
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const auto& item : iterate(input)) out.push_back(apply_filter(name, item, rest));
  return Value::make_list(std::move(out));
}

Value filter_indent(const Value& input, const CallArgs& args) {
  Value width = arg_or(args, 0, "width", Value::integer(4));
  std::string pad = width.is_string() ? width.s : std::string(static_cast<size_t>(std::max<int64_t>(width.i, 0)), ' ');
  bool first = arg_or(args, 1, "first", Value::boolean(false)).truthy();
  bool blank = arg_or(args, 2, "blank", Value::boolean(false)).truthy();
  std::vector<std::string> lines = py_splitlines(input.str() + "\n");
  std::string out;
  if (blank) {
    for (size_t k = 0; k < lines.size(); ++k) out += (k ? "\n" + pad : "") + lines[k];
  } else {
    out = lines.empty() ? "" : lines[0];
    for (size_t k = 1; k < lines.size(); ++k) out += "\n" + (lines[k].empty() ? "" : pad + lines[k]);
  }
  return Value::string(first ? pad + out : out);
}

Value filter_join(const Value& input, const CallArgs& args) {
  Value sep = arg_or(args, 0, "d", Value::string(""));
  Value attribute = arg_or(args, 1, "attribute", Value::none());
  std::string out;
  ValueList items = iterate(input);
  for (size_t k = 0; k < items.size(); ++k) {
    Value item = attribute.is_string() ? attr_path(items[k], attribute.s) : items[k];
    out += (k ? sep.str() : "") + item.str();
  }
  return Value::string(out);
}

Value filter_sort(const Value& input, const CallArgs& args) {
  bool reverse = arg_or(args, 0, "reverse", Value::boolean(false)).truthy();
  bool case_sensitive = arg_or(args, 1, "case_sensitive", Value::boolean(false)).truthy();
  Value attribute = arg_or(args, 2, "attribute", Value::none());
  ValueList items = iterate(input);
  auto key = [&](const Value& v) {
    Value k = attribute.is_string() ? attr_path(v, attribute.s) : v;
    return (!case_sensitive && k.is_string()) ? Value::string(py_lower(k.s)) : k;
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
    bool ok = true;
    int c = values_compare(key(a), key(b), ok);
    if (!ok) jinja_raise("'<' not supported between instances of '" + a.type_name() + "' and '" + b.type_name() + "'");
    return reverse ? c > 0 : c < 0;
  });
  return Value::make_list(std::move(items));
}

Value filter_round(const Value& input, const CallArgs& args) {
  int64_t precision = arg_or(args, 0, "precision", Value::integer(0)).i;
  std::string method = arg_or(args, 1, "method", Value::string("common")).str();
  if (method == "common" && input.kind == Kind::Int) return input;  // Python's round(int, n) is the int
  double scale = std::pow(10.0, static_cast<double>(precision)), x = input.as_double() * scale;
  double r = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::nearbyint(x);
  if (method != "common" && method != "ceil" && method != "floor") jinja_raise("method must be common, ceil or floor");
  return Value::floating(r / scale);
}

std::string soft_str(const Value& v) { return v.str(); }

}  // namespace

Value apply_filter(const std::string& name, const Value& input, const CallArgs& args) {
  auto str_or = [&](size_t i, const char* key) { return arg_or(args, i, key, Value::undefined()); };
  if (name == "trim") {
    Value chars = str_or(0, "chars");
    return Value::string(py_strip(soft_str(input), StripSide::Both, chars.is_string(), chars.s));
  }
  if (name == "tojson") return filter_tojson(input, args);
  if (name == "length" || name == "count") return Value::integer(value_length(input));
  if (name == "upper") return Value::string(py_upper(soft_str(input)));
  if (name == "lower") return Value::string(py_lower(soft_str(input)));
  if (name == "capitalize") return Value::string(py_capitalize(soft_str(input)));
  if (name == "title") return Value::string(jinja_title(soft_str(input)));
  if (name == "default" || name == "d") {
    Value fallback = arg_or(args, 0, "default_value", Value::string(""));
    bool boolean = arg_or(args, 1, "boolean", Value::boolean(false)).truthy();
    if (input.is_undefined() || (boolean && !input.truthy())) return fallback;
    return input;
  }
  if (name == "items") {
    if (input.is_undefined()) return Value::make_list({});
    if (!input.is_mapping()) jinja_raise("can only get item pairs from a mapping, not " + input.type_name());
    ValueList pairs;
    for (const auto& [k, v] : *input.dict) pairs.push_back(Value::make_tuple({k, v}));
    return Value::make_list(std::move(pairs));
  }
  if (name == "join") return filter_join(input, args);
  if (name == "first" || name == "last") {
    ValueList items = iterate(input);
    if (items.empty()) return Value::undefined("no " + name + " item, sequence was empty");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "replace") {
    Value count = arg_or(args, 2, "count", Value::none());
    return Value::string(py_replace(soft_str(input), str_or(0, "old").str(), str_or(1, "new").str(),
                                    count.kind == Kind::Int ? static_cast<long>(count.i) : -1));
  }
  if (name == "string") return Value::string(soft_str(input));
  if (name == "int") return filter_int(input, args);
  if (name == "float") return filter_float(input, args);
  if (name == "abs") {
    if (input.kind == Kind::Float) return Value::floating(std::fabs(input.f));
    if (input.is_number()) return Value::integer(std::llabs(input.kind == Kind::Bool ? input.b : input.i));
    jinja_raise("bad operand type for abs(): '" + input.type_name() + "'");
  }
  if (name == "round") return filter_round(input, args);
  if (name == "selectattr") return select_filter(input, args, true, true);
  if (name == "rejectattr") return select_filter(input, args, true, false);
  if (name == "select") return select_filter(input, args, false, true);
  if (name == "reject") return select_filter(input, args, false, false);
  if (name == "map") return filter_map(input, args);
  if (name == "list") return Value::make_list(iterate(input));
  if (name == "indent") return filter_indent(input, args);
  if (name == "reverse") {
    if (input.is_string()) return slice_value(input, Value::none(), Value::none(), Value::integer(-1));
    ValueList items = iterate(input);
    std::reverse(items.begin(), items.end());
    return Value::make_list(std::move(items));
  }
  if (name == "sort") return filter_sort(input, args);
  if (name == "unique") {
    ValueList out;
    for (const auto& item : iterate(input)) {
      bool seen = false;
      for (const auto& o : out) seen = seen || values_equal(o, item);
      if (!seen) out.push_back(item);
    }
    return Value::make_list(std::move(out));
  }
  if (name == "sum") {
    Value total = arg_or(args, 1, "start", Value::integer(0));
    for (const auto& item : iterate(input)) total = binary_op("+", total, item);
    return total;
  }
  if (name == "safe") return input;
  jinja_raise("unknown filter '" + name + "'");
}

bool is_known_filter(const std::string& n) {
  static const char* kNames[] = {"trim", "tojson", "length", "count", "upper", "lower", "capitalize", "title",
                                 "default", "d", "items", "join", "first", "last", "replace", "string", "int",
                                 "float", "abs", "round", "selectattr", "rejectattr", "select", "reject", "map",
                                 "list", "indent", "reverse", "sort", "unique", "sum", "safe"};
  for (const char* k : kNames)
    if (n == k) return true;
  return false;
}

bool apply_test(const std::string& name, const Value& v, const CallArgs& args) {
  Value other = arg_or(args, 0, "other", Value::undefined());
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "sequence") return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind == Kind::Int;
  if (name == "float") return v.kind == Kind::Float;
  if (name == "boolean") return v.kind == Kind::Bool;
  if (name == "true") return v.kind == Kind::Bool && v.b;
  if (name == "false") return v.kind == Kind::Bool && !v.b;
  if (name == "callable") return v.kind == Kind::Callable;
  if (name == "equalto" || name == "eq" || name == "==") return values_equal(v, other);
  if (name == "ne" || name == "!=") return !values_equal(v, other);
  if (name == "lt" || name == "lessthan" || name == "<") return compare_op("<", v, other);
  if (name == "le" || name == "<=") return compare_op("<=", v, other);
  if (name == "gt" || name == "greaterthan" || name == ">") return compare_op(">", v, other);
  if (name == "ge" || name == ">=") return compare_op(">=", v, other);
  if (name == "in") return compare_op("in", v, arg_or(args, 0, "seq", Value::undefined()));
  if (name == "sameas") return v.kind == other.kind && values_equal(v, other) && (v.is_none() || v.kind == Kind::Bool);
  if (name == "lower") return v.is_string() && py_lower(v.s) == v.s;
  if (name == "upper") return v.is_string() && py_upper(v.s) == v.s;
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (v.kind != Kind::Int) jinja_raise("the '" + name + "' test needs an integer, not " + v.type_name());
    if (name == "divisibleby") {
      Value d = arg_or(args, 0, "num", Value::undefined());
      if (d.kind != Kind::Int || d.i == 0) jinja_raise("divisibleby needs a non-zero integer");
      return v.i % d.i == 0;
    }
    return (v.i % 2 != 0) == (name == "odd");
  }
  if (name == "escaped") return false;
  jinja_raise("unknown test '" + name + "'");
}

bool is_known_test(const std::string& n) {
  static const char* kNames[] = {"defined", "undefined", "none", "string", "mapping", "iterable", "sequence",
                                 "number", "integer", "float", "boolean", "true", "false", "callable",
                                 "equalto", "eq", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt",
                                 "greaterthan", ">", "ge", ">=", "in", "sameas", "lower", "upper", "odd", "even",
                                 "divisibleby", "escaped"};
  for (const char* k : kNames)
    if (n == k) return true;
  return false;
}

}  // namespace reglage::chat
