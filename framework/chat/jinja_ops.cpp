// Python operators, item access, iteration and slicing for the renderer.
#include "framework/chat/jinja_ops.h"

#include <cmath>

#include "framework/chat/jinja_eval.h"

namespace reglage::chat {
namespace {

[[noreturn]] void operand_error(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) raise_undefined(a);
  if (b.is_undefined()) raise_undefined(b);
  if (op == "+" && a.is_string())
    jinja_raise("can only concatenate str (not \"" + b.type_name() + "\") to str");
  jinja_raise("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
}

bool is_integral(const Value& v) { return v.kind == Kind::Int || v.kind == Kind::Bool; }
int64_t as_int(const Value& v) { return v.kind == Kind::Bool ? int64_t{v.b} : v.i; }

Value repeat(const Value& seq, int64_t times) {
  if (seq.is_string()) {
    std::string out;
    for (int64_t k = 0; k < times; ++k) {
      out += seq.s;
      if (out.size() > (64u << 20)) jinja_raise("string repetition larger than 64 MB");
    }
    return Value::string(out);
  }
  ValueList items;
  for (int64_t k = 0; k < times; ++k) {
    items.insert(items.end(), seq.list->begin(), seq.list->end());
    if (items.size() > 1000000) jinja_raise("list repetition longer than 1000000 items");
  }
  return Value::make_list(std::move(items));
}

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

constexpr size_t kMaxStringBytes = 64u << 20;  // a string built by ~ or + (doubling in a loop grows fast)

Value checked_string(std::string s) {
  if (s.size() > kMaxStringBytes) jinja_raise("a string longer than 64 MB was built (an endless loop?)");
  return Value::string(std::move(s));
}

}  // namespace

Value unary_op(const std::string& op, const Value& v) {
  if (v.is_undefined()) raise_undefined(v);
  if (!v.is_number()) jinja_raise("bad operand type for unary " + op + ": '" + v.type_name() + "'");
  if (op == "+") return v.kind == Kind::Bool ? Value::integer(v.b) : v;
  if (v.kind == Kind::Float) return Value::floating(-v.f);
  return Value::integer(-as_int(v));
}

Value binary_op(const std::string& op, const Value& a, const Value& b) {
  if (op == "~") return checked_string(a.str() + b.str());
  if (a.is_number() && b.is_number()) {
    bool ints = is_integral(a) && is_integral(b);
    double x = a.as_double(), y = b.as_double();
    if (ints && (op == "+" || op == "-" || op == "*")) {  // Python ints are unbounded; ours stop at 64 bits
      int64_t r = 0;
      bool overflow = op == "+" ? __builtin_add_overflow(as_int(a), as_int(b), &r)
                    : op == "-" ? __builtin_sub_overflow(as_int(a), as_int(b), &r)
                                : __builtin_mul_overflow(as_int(a), as_int(b), &r);
      if (overflow) jinja_raise("integer overflow: the result of " + op + " does not fit in 64 bits");
      return Value::integer(r);
    }
    if (op == "+") return Value::floating(x + y);
    if (op == "-") return Value::floating(x - y);
    if (op == "*") return Value::floating(x * y);
    if (op == "/") {
      if (y == 0) jinja_raise("division by zero");
      return Value::floating(x / y);
    }
    if (op == "//" || op == "%") {
      if (y == 0) jinja_raise(op == "//" ? "integer division or modulo by zero" : "modulo by zero");
      if (ints) {
        int64_t q = floor_div(as_int(a), as_int(b));
        return Value::integer(op == "//" ? q : as_int(a) - q * as_int(b));
      }
      double q = std::floor(x / y);
      return Value::floating(op == "//" ? q : x - q * y);
    }
    if (op == "**") {
      if (ints && as_int(b) >= 0) {  // exponentiation by squaring, overflow checked
        int64_t r = 1, base = as_int(a), e = as_int(b);
        bool overflow = false;
        while (e > 0 && !overflow) {
          if (e & 1) overflow = __builtin_mul_overflow(r, base, &r);
          e >>= 1;
          if (e > 0 && !overflow) overflow = __builtin_mul_overflow(base, base, &base);
        }
        if (overflow) jinja_raise("integer overflow: the result of ** does not fit in 64 bits");
        return Value::integer(r);
      }
      return Value::floating(std::pow(x, y));
    }
  }
  if (op == "+" && a.is_string() && b.is_string()) return checked_string(a.s + b.s);
  if (op == "+" && a.is_list() && b.is_list()) {
    if (a.list->size() + b.list->size() > 1000000) jinja_raise("a list longer than 1000000 items was built");
    ValueList items = *a.list;
    items.insert(items.end(), b.list->begin(), b.list->end());
    return Value::make_list(std::move(items));
  }
  if (op == "*" && (a.is_string() || a.is_list()) && is_integral(b)) return repeat(a, as_int(b));
  if (op == "*" && (b.is_string() || b.is_list()) && is_integral(a)) return repeat(b, as_int(a));
  if (op == "%" && a.is_string()) jinja_raise("printf-style string formatting ('...' % x) is not supported by this renderer");
  operand_error(op, a, b);
}

bool compare_op(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return values_equal(a, b);
  if (op == "!=") return !values_equal(a, b);
  if (op == "in" || op == "not in") {
    bool found = false;
    if (b.is_string()) {
      if (!a.is_string()) jinja_raise("'in <string>' requires string as left operand, not " + a.type_name());
      found = b.s.find(a.s) != std::string::npos;
    } else if (b.is_mapping()) {
      for (const auto& kv : *b.dict) found = found || values_equal(kv.first, a);
    } else if (b.is_list()) {
      for (const auto& item : *b.list) found = found || values_equal(item, a);
    } else if (!b.is_undefined()) {
      jinja_raise("argument of type '" + b.type_name() + "' is not iterable");
    }
    return op == "in" ? found : !found;
  }
  if (a.is_undefined()) raise_undefined(a);
  if (b.is_undefined()) raise_undefined(b);
  bool ok = true;
  int c = values_compare(a, b, ok);
  if (!ok) jinja_raise("'" + op + "' not supported between instances of '" + a.type_name() + "' and '" + b.type_name() + "'");
  if (op == "<") return c < 0;
  if (op == "<=") return c <= 0;
  if (op == ">") return c > 0;
  return c >= 0;
}

Value get_item(const Value& object, const Value& key) {
  if (object.is_undefined()) raise_undefined(object);
  if (object.is_mapping()) {
    for (const auto& [k, v] : *object.dict)
      if (values_equal(k, key)) return v;
    if (key.is_string()) {
      if (object.is_dict()) {  // jinja2 falls back to the attribute: d['items'] is the method when absent
        Value method = get_attribute(object, key.s);
        if (!method.is_undefined()) return method;
      }
      return Value::undefined("'dict object' has no attribute '" + key.s + "'");
    }
    return Value::undefined("'dict object' has no element " + key.repr());
  }
  if ((object.is_list() || object.is_string()) && (key.kind == Kind::Int || key.kind == Kind::Bool)) {
    int64_t index = key.kind == Kind::Bool ? key.b : key.i;
    if (object.is_list()) {
      int64_t n = static_cast<int64_t>(object.list->size());
      if (index < 0) index += n;
      if (index < 0 || index >= n) return Value::undefined("list object has no element " + key.str());
      return (*object.list)[index];
    }
    std::vector<uint32_t> cps = utf8_decode(object.s);
    int64_t n = static_cast<int64_t>(cps.size());
    if (index < 0) index += n;
    if (index < 0 || index >= n) return Value::undefined("str object has no element " + key.str());
    return Value::string(utf8_encode(cps, index, index + 1));
  }
  if (key.is_string()) return get_attribute(object, key.s);
  return Value::undefined("'" + object.type_name() + " object' has no element " + key.repr());
}

ValueList iterate(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined: return {};
    case Kind::List: return *v.list;
    case Kind::Dict: {
      ValueList keys;
      for (const auto& kv : *v.dict) keys.push_back(kv.first);
      return keys;
    }
    case Kind::String: {
      std::vector<uint32_t> cps = utf8_decode(v.s);
      ValueList chars;
      for (size_t k = 0; k < cps.size(); ++k) chars.push_back(Value::string(utf8_encode(cps, k, k + 1)));
      return chars;
    }
    default: jinja_raise("'" + v.type_name() + "' object is not iterable");
  }
}

Value slice_value(const Value& v, const Value& start_v, const Value& stop_v, const Value& step_v) {
  if (v.is_undefined()) raise_undefined(v);
  auto bound = [](const Value& b, const char* what) -> std::pair<bool, int64_t> {
    if (b.is_none() || b.is_undefined()) return {false, 0};
    if (b.kind != Kind::Int && b.kind != Kind::Bool)
      jinja_raise(std::string("slice ") + what + " must be an integer or None, not " + b.type_name());
    return {true, b.kind == Kind::Bool ? b.b : b.i};
  };
  auto [has_start, start] = bound(start_v, "start");
  auto [has_stop, stop] = bound(stop_v, "stop");
  auto [has_step, step] = bound(step_v, "step");
  if (!has_step) step = 1;
  if (step == 0) jinja_raise("slice step cannot be zero");
  std::vector<uint32_t> cps;
  int64_t n;
  if (v.is_string()) {
    cps = utf8_decode(v.s);
    n = static_cast<int64_t>(cps.size());
  } else if (v.is_list()) {
    n = static_cast<int64_t>(v.list->size());
  } else {
    jinja_raise("'" + v.type_name() + "' object is not subscriptable");
  }
  // CPython's PySlice_AdjustIndices.
  auto adjust = [&](bool has, int64_t x, int64_t dflt) {
    if (!has) return dflt;
    if (x < 0) { x += n; if (x < 0) x = step < 0 ? -1 : 0; }
    else if (x >= n) x = step < 0 ? n - 1 : n;
    return x;
  };
  start = adjust(has_start, start, step < 0 ? n - 1 : 0);
  stop = adjust(has_stop, stop, step < 0 ? -1 : n);
  std::vector<int64_t> picks;
  for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) picks.push_back(k);
  if (v.is_string()) {
    std::string out;
    for (int64_t k : picks) out += utf8_encode(cps, k, k + 1);
    return Value::string(out);
  }
  ValueList items;
  for (int64_t k : picks) items.push_back((*v.list)[k]);
  return v.tuple ? Value::make_tuple(std::move(items)) : Value::make_list(std::move(items));
}

}  // namespace reglage::chat
