// Attribute access (x.name): the Python methods templates call on str, dict and list values, bound to their
// object, and a dict's keys. transformers renders in an ImmutableSandboxedEnvironment, so methods that
// modify a list or dict are refused there too.
#include "framework/chat/jinja_eval.h"
#include "framework/chat/jinja_strings.h"

namespace reglage::chat {

Value arg_or(const CallArgs& args, size_t index, const std::string& name, const Value& fallback) {
  for (const auto& [key, val] : args.keyword)
    if (key == name) return val;
  if (index < args.positional.size()) return args.positional[index];
  return fallback;
}

namespace {

std::string str_arg(const CallArgs& args, size_t index, const std::string& name, const char* method) {
  Value v = arg_or(args, index, name, Value::undefined());
  if (!v.is_string()) jinja_raise(std::string(method) + "() argument must be str, not " + v.type_name());
  return v.s;
}

long int_arg(const CallArgs& args, size_t index, const std::string& name, long fallback) {
  Value v = arg_or(args, index, name, Value::integer(fallback));
  if (v.kind != Kind::Int) jinja_raise("'" + v.type_name() + "' object cannot be interpreted as an integer");
  return static_cast<long>(v.i);
}

Value string_list(const std::vector<std::string>& parts) {
  ValueList items;
  for (const auto& p : parts) items.push_back(Value::string(p));
  return Value::make_list(std::move(items));
}

// startswith/endswith take a str or a tuple of str.
bool affix_match(const std::string& s, const Value& affix, bool prefix) {
  if (affix.is_list()) {
    for (const auto& a : *affix.list)
      if (affix_match(s, a, prefix)) return true;
    return false;
  }
  if (!affix.is_string()) jinja_raise(std::string(prefix ? "startswith" : "endswith") + " first arg must be str or a tuple of str");
  const std::string& a = affix.s;
  if (a.size() > s.size()) return false;
  return prefix ? s.compare(0, a.size(), a) == 0 : s.compare(s.size() - a.size(), a.size(), a) == 0;
}

Value string_method(const std::string& s, const std::string& name, const CallArgs& args) {
  auto strip = [&](StripSide side) {
    Value chars = arg_or(args, 0, "chars", Value::none());
    if (!chars.is_none() && !chars.is_string()) jinja_raise("strip arg must be None or str");
    return Value::string(py_strip(s, side, chars.is_string(), chars.s));
  };
  if (name == "strip") return strip(StripSide::Both);
  if (name == "lstrip") return strip(StripSide::Left);
  if (name == "rstrip") return strip(StripSide::Right);
  if (name == "split" || name == "rsplit") {
    Value sep = arg_or(args, 0, "sep", Value::none());
    if (!sep.is_none() && !sep.is_string()) jinja_raise("must be str or None, not " + sep.type_name());
    long maxsplit = int_arg(args, 1, "maxsplit", -1);
    return string_list(name == "split" ? py_split(s, sep.is_string(), sep.s, maxsplit)
                                       : py_rsplit(s, sep.is_string(), sep.s, maxsplit));
  }
  if (name == "startswith" || name == "endswith")
    return Value::boolean(affix_match(s, arg_or(args, 0, "prefix", Value::undefined()), name == "startswith"));
  if (name == "upper") return Value::string(py_upper(s));
  if (name == "lower") return Value::string(py_lower(s));
  if (name == "title") return Value::string(py_title(s));
  if (name == "capitalize") return Value::string(py_capitalize(s));
  if (name == "replace")
    return Value::string(py_replace(s, str_arg(args, 0, "old", "replace"), str_arg(args, 1, "new", "replace"),
                                    int_arg(args, 2, "count", -1)));
  if (name == "splitlines") return string_list(py_splitlines(s, arg_or(args, 0, "keepends", Value::boolean(false)).truthy()));
  if (name == "find" || name == "rfind" || name == "count" || name == "index") {
    std::string needle = str_arg(args, 0, "sub", name.c_str());
    if (name == "count") {
      if (needle.empty()) return Value::integer(static_cast<int64_t>(py_len(s) + 1));
      int64_t n = 0;
      for (size_t pos = s.find(needle); pos != std::string::npos; pos = s.find(needle, pos + needle.size())) ++n;
      return Value::integer(n);
    }
    size_t hit = name == "rfind" ? s.rfind(needle) : s.find(needle);
    if (hit == std::string::npos) {
      if (name == "index") jinja_raise("substring not found");
      return Value::integer(-1);
    }
    return Value::integer(static_cast<int64_t>(py_len(s.substr(0, hit))));  // a code point index
  }
  if (name == "join") {
    std::string out;
    ValueList items = iterate(arg_or(args, 0, "iterable", Value::undefined()));
    for (size_t k = 0; k < items.size(); ++k) {
      if (!items[k].is_string()) jinja_raise("sequence item " + std::to_string(k) + ": expected str instance, " + items[k].type_name() + " found");
      out += (k ? s : "") + items[k].s;
    }
    return Value::string(out);
  }
  if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum") {
    std::vector<uint32_t> cps = utf8_decode(s);
    if (cps.empty()) return Value::boolean(false);
    for (uint32_t c : cps) {
      bool digit = c >= '0' && c <= '9', alpha = (c | 32) >= 'a' && (c | 32) <= 'z';
      bool ok = name == "isdigit" ? digit : name == "isspace" ? is_python_space(c) : name == "isalpha" ? alpha : alpha || digit;
      if (!ok) return Value::boolean(false);
    }
    return Value::boolean(true);
  }
  return Value::undefined("'str object' has no attribute '" + name + "'");
}

bool is_string_method(const std::string& n) {
  static const char* kNames[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith",
                                 "upper", "lower", "title", "capitalize", "replace", "splitlines", "find",
                                 "rfind", "count", "index", "join", "isdigit", "isspace", "isalpha", "isalnum"};
  for (const char* k : kNames)
    if (n == k) return true;
  return false;
}

Value dict_method(const Value& d, const std::string& name, const CallArgs& args) {
  if (name == "items" || name == "keys" || name == "values") {
    ValueList out;
    for (const auto& [k, v] : *d.dict)
      out.push_back(name == "items" ? Value::make_tuple({k, v}) : name == "keys" ? k : v);
    return Value::make_list(std::move(out));
  }
  // get(key, default=None)
  Value key = arg_or(args, 0, "key", Value::undefined());
  for (const auto& [k, v] : *d.dict)
    if (values_equal(k, key)) return v;
  return arg_or(args, 1, "default", Value::none());
}

Value bind(std::function<Value(const CallArgs&)> fn) { return Value::callable(std::move(fn)); }

}  // namespace

Value get_attribute(const Value& object, const std::string& name) {
  switch (object.kind) {
    case Kind::Undefined: raise_undefined(object);
    case Kind::Dict:
      if (name == "items" || name == "keys" || name == "values" || name == "get")
        return bind([object, name](const CallArgs& a) { return dict_method(object, name, a); });
      if (name == "update" || name == "pop" || name == "setdefault" || name == "clear" || name == "popitem")
        jinja_raise("dict." + name + "() modifies the dict, which transformers' sandboxed renderer forbids");
      [[fallthrough]];
    case Kind::Namespace: {
      const Value* v = object.find(name);
      if (v) return *v;
      return Value::undefined("'" + std::string(object.is_dict() ? "dict object" : "Namespace") +
                              "' has no attribute '" + name + "'");
    }
    case Kind::String:
      if (is_string_method(name)) {
        std::string s = object.s;
        return bind([s, name](const CallArgs& a) { return string_method(s, name, a); });
      }
      return Value::undefined("'str object' has no attribute '" + name + "'");
    case Kind::List:
      if (name == "append" || name == "extend" || name == "pop" || name == "insert" || name == "remove" ||
          name == "clear" || name == "sort" || name == "reverse")
        jinja_raise("list." + name + "() modifies the list, which transformers' sandboxed renderer forbids");
      if (name == "index" || name == "count") {
        return bind([object, name](const CallArgs& a) {
          Value x = arg_or(a, 0, "value", Value::undefined());
          int64_t count = 0;
          for (size_t k = 0; k < object.list->size(); ++k)
            if (values_equal((*object.list)[k], x)) {
              if (name == "index") return Value::integer(static_cast<int64_t>(k));
              ++count;
            }
          if (name == "index") jinja_raise(x.repr() + " is not in list");
          return Value::integer(count);
        });
      }
      return Value::undefined("'list object' has no attribute '" + name + "'");
    default:
      return Value::undefined("'" + object.type_name() + " object' has no attribute '" + name + "'");
  }
}

}  // namespace reglage::chat
