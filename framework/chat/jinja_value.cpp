// Value semantics of the Jinja renderer, written to match CPython's str/repr/==/< and json.dumps.
#include "framework/chat/jinja_value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <nlohmann/json.hpp>

namespace reglage::chat {

Value Value::make_list(ValueList items) {
  Value v;
  v.kind = Kind::List;
  v.list = std::make_shared<ValueList>(std::move(items));
  return v;
}

Value Value::make_tuple(ValueList items) {
  Value v = make_list(std::move(items));
  v.tuple = true;
  return v;
}

Value Value::make_dict(ValueDict items) {
  Value v;
  v.kind = Kind::Dict;
  v.dict = std::make_shared<ValueDict>(std::move(items));
  return v;
}

Value Value::make_namespace(ValueDict items) {
  Value v = make_dict(std::move(items));
  v.kind = Kind::Namespace;
  return v;
}

Value Value::callable(NativeFn fn) {
  Value v;
  v.kind = Kind::Callable;
  v.fn = std::make_shared<NativeFn>(std::move(fn));
  return v;
}

const Value* Value::find(const std::string& key) const {
  if (!dict) return nullptr;
  for (const auto& [k, val] : *dict)
    if (k.kind == Kind::String && k.s == key) return &val;
  return nullptr;
}

bool Value::truthy() const {
  switch (kind) {
    case Kind::Undefined: case Kind::None: return false;
    case Kind::Bool: return b;
    case Kind::Int: return i != 0;
    case Kind::Float: return f != 0.0;
    case Kind::String: return !s.empty();
    case Kind::List: return !list->empty();
    case Kind::Dict: return !dict->empty();
    case Kind::Namespace: case Kind::Callable: return true;
  }
  return false;
}

double Value::as_double() const {
  if (kind == Kind::Float) return f;
  if (kind == Kind::Int) return static_cast<double>(i);
  if (kind == Kind::Bool) return b ? 1.0 : 0.0;
  return 0.0;
}

std::string Value::type_name() const {
  switch (kind) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Namespace: return "Namespace";
    case Kind::Callable: return "function";
  }
  return "?";
}

std::string python_float_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  if (x == 0.0) return std::signbit(x) ? "-0.0" : "0.0";
  // Shortest %.Ne that reads back to the same double: the digits CPython's repr picks.
  char buf[64];
  for (int prec = 0; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*e", prec, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  // buf = "-d.ddddde±XX": split into sign, digits and decimal exponent.
  std::string text(buf);
  bool negative = text[0] == '-';
  if (negative) text.erase(0, 1);
  size_t e = text.find('e');
  int exponent = std::atoi(text.c_str() + e + 1);
  std::string digits;
  for (size_t k = 0; k < e; ++k)
    if (text[k] != '.') digits += text[k];
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  int decpt = exponent + 1;  // position of the decimal point relative to the digits
  std::string out = negative ? "-" : "";
  if (decpt > -4 && decpt <= 16) {  // CPython 'r' format: fixed notation in this range
    if (decpt <= 0) {
      out += "0." + std::string(-decpt, '0') + digits;
    } else if (static_cast<size_t>(decpt) >= digits.size()) {
      out += digits + std::string(decpt - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, decpt) + "." + digits.substr(decpt);
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char exp_buf[16];
    std::snprintf(exp_buf, sizeof exp_buf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += exp_buf;
  }
  return out;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::vector<uint32_t> utf8_decode(const std::string& s) {
  // An invalid byte b decodes to 0xDC00 + b (Python's surrogateescape), so that any input, valid UTF-8 or
  // not, round-trips exactly through utf8_encode.
  std::vector<uint32_t> cps;
  cps.reserve(s.size());
  for (size_t k = 0; k < s.size();) {
    unsigned char c = s[k];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = len > 0 && k + len <= s.size();
    for (int j = 1; ok && j < len; ++j) ok = (static_cast<unsigned char>(s[k + j]) >> 6) == 2;
    if (!ok) {
      cps.push_back(0xDC00 + c);
      ++k;
      continue;
    }
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int j = 1; j < len; ++j) cp = (cp << 6) | (static_cast<unsigned char>(s[k + j]) & 0x3F);
    cps.push_back(cp);
    k += len;
  }
  return cps;
}

std::string utf8_encode(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t k = begin; k < end && k < cps.size(); ++k) {
    uint32_t cp = cps[k];
    if (cp >= 0xDC80 && cp <= 0xDCFF) out += static_cast<char>(cp - 0xDC00);  // a raw invalid byte
    else utf8_append(out, cp);
  }
  return out;
}

bool is_python_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// Code points that Python's str.isprintable() rejects, approximated for the ranges text can hold.
static bool python_unprintable(uint32_t cp) {
  if (cp < 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD) return true;
  if (cp > 0x7F && is_python_space(cp)) return true;
  if ((cp >= 0x200B && cp <= 0x200F) || (cp >= 0x2060 && cp <= 0x2064) || cp == 0xFEFF) return true;
  if (cp >= 0xD800 && cp <= 0xDFFF) return true;
  return false;
}

std::string python_str_repr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  for (uint32_t cp : utf8_decode(s)) {
    char buf[16];
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') { out += '\\'; out += static_cast<char>(cp); }
    else if (cp == '\t') out += "\\t";
    else if (cp == '\n') out += "\\n";
    else if (cp == '\r') out += "\\r";
    else if (python_unprintable(cp)) {
      if (cp < 0x100) std::snprintf(buf, sizeof buf, "\\x%02x", cp);
      else std::snprintf(buf, sizeof buf, "\\u%04x", cp);
      out += buf;
    } else utf8_append(out, cp);
  }
  out += quote;
  return out;
}

namespace {
// A namespace can hold itself (set ns.me = ns); printing stops at this depth the way Python prints "...".
thread_local int repr_depth = 0;
constexpr int kMaxReprDepth = 100;
struct ReprDepth {
  ReprDepth() { ++repr_depth; }
  ~ReprDepth() { --repr_depth; }
};
}  // namespace

std::string Value::repr() const {
  ReprDepth guard;
  if (repr_depth > kMaxReprDepth) return "...";
  switch (kind) {
    case Kind::String: return python_str_repr(s);
    case Kind::Undefined: return "Undefined";
    default: break;
  }
  if (kind == Kind::List) {
    std::string out = tuple ? "(" : "[";
    for (size_t k = 0; k < list->size(); ++k) out += (k ? ", " : "") + (*list)[k].repr();
    if (tuple) return out + (list->size() == 1 ? ",)" : ")");
    return out + "]";
  }
  if (kind == Kind::Dict) {
    std::string out = "{";
    for (size_t k = 0; k < dict->size(); ++k)
      out += (k ? ", " : "") + (*dict)[k].first.repr() + ": " + (*dict)[k].second.repr();
    return out + "}";
  }
  return str();
}

std::string Value::str() const {
  switch (kind) {
    case Kind::Undefined: return "";
    case Kind::None: return "None";
    case Kind::Bool: return b ? "True" : "False";
    case Kind::Int: return std::to_string(i);
    case Kind::Float: return python_float_repr(f);
    case Kind::String: return s;
    case Kind::List: case Kind::Dict: return repr();
    case Kind::Namespace: {
      ReprDepth guard;
      if (repr_depth > kMaxReprDepth) return "...";
      return "<Namespace " + Value::make_dict(*dict).repr() + ">";
    }
    case Kind::Callable: return "<function>";
  }
  return "";
}

bool values_equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Kind::Float && b.kind != Kind::Float)
      return (a.kind == Kind::Bool ? int64_t{a.b} : a.i) == (b.kind == Kind::Bool ? int64_t{b.b} : b.i);
    return a.as_double() == b.as_double();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined: case Kind::None: return true;
    case Kind::String: return a.s == b.s;
    case Kind::List:
      if (a.tuple != b.tuple || a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!values_equal((*a.list)[k], (*b.list)[k])) return false;
      return true;
    case Kind::Dict:  // order-insensitive, like Python dicts
      if (a.dict->size() != b.dict->size()) return false;
      for (const auto& [key, val] : *a.dict) {
        bool found = false;
        for (const auto& [key2, val2] : *b.dict)
          if (values_equal(key, key2)) { found = values_equal(val, val2); break; }
        if (!found) return false;
      }
      return true;
    default: return a.dict == b.dict && a.fn == b.fn;  // identity for namespaces and callables
  }
}

int values_compare(const Value& a, const Value& b, bool& ok) {
  ok = true;
  if (a.is_number() && b.is_number()) {
    double x = a.as_double(), y = b.as_double();
    if (a.kind == Kind::Int && b.kind == Kind::Int) return a.i < b.i ? -1 : a.i > b.i ? 1 : 0;
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {  // UTF-8 byte order equals code point order
    int c = a.s.compare(b.s);
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list()) {
    size_t n = std::min(a.list->size(), b.list->size());
    for (size_t k = 0; k < n; ++k) {
      if (values_equal((*a.list)[k], (*b.list)[k])) continue;
      return values_compare((*a.list)[k], (*b.list)[k], ok);
    }
    return a.list->size() < b.list->size() ? -1 : a.list->size() > b.list->size() ? 1 : 0;
  }
  ok = false;
  return 0;
}

Value value_from_json(const nlohmann::json& j) { return value_from_json(nlohmann::ordered_json(j)); }

Value value_from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      return Value::integer(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Value::floating(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      ValueList items;
      for (const auto& item : j) items.push_back(value_from_json(item));
      return Value::make_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      ValueDict items;
      for (auto it = j.begin(); it != j.end(); ++it)
        items.emplace_back(Value::string(it.key()), value_from_json(it.value()));
      return Value::make_dict(std::move(items));
    }
    default: return Value::none();
  }
}

}  // namespace reglage::chat
