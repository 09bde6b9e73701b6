// Python's json.dumps for renderer values: transformers' `tojson` filter calls
// json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) unless the template
// passes other arguments, and templates print the result, so every byte must match CPython's encoder.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "framework/chat/jinja_value.h"

namespace reglage::chat {
namespace {

// json's py_encode_basestring / py_encode_basestring_ascii.
void dump_string(const std::string& s, bool ensure_ascii, std::string& out) {
  out += '"';
  char buf[16];
  for (uint32_t cp : utf8_decode(s)) {
    switch (cp) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (cp < 0x20) {
      std::snprintf(buf, sizeof buf, "\\u%04x", cp);
      out += buf;
    } else if (ensure_ascii && cp > 0x7E && cp != 0x7F) {
      if (cp >= 0x10000) {  // a surrogate pair, as Python writes it
        uint32_t v = cp - 0x10000;
        std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
      } else {
        std::snprintf(buf, sizeof buf, "\\u%04x", cp);
      }
      out += buf;
    } else if (ensure_ascii && cp == 0x7F) {
      out += "\\u007f";
    } else {
      utf8_append(out, cp);
    }
  }
  out += '"';
}

std::string float_json(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  return python_float_repr(x);
}

// Dict keys: str as is; int, float, bool and None are converted the way json.dumps does.
bool key_text(const Value& key, std::string& text, std::string& why) {
  switch (key.kind) {
    case Kind::String: text = key.s; return true;
    case Kind::Int: text = std::to_string(key.i); return true;
    case Kind::Float: text = float_json(key.f); return true;
    case Kind::Bool: text = key.b ? "true" : "false"; return true;
    case Kind::None: text = "null"; return true;
    default: why = "keys must be str, int, float, bool or None, not " + key.type_name(); return false;
  }
}

bool dump(const Value& v, const JsonDumpOptions& o, int level, std::string& out, std::string& why) {
  std::string newline_indent;
  auto open_level = [&](int depth) {
    if (o.indent < 0) return std::string();
    return "\n" + std::string(static_cast<size_t>(o.indent) * depth, ' ');
  };
  switch (v.kind) {
    case Kind::None: out += "null"; return true;
    case Kind::Bool: out += v.b ? "true" : "false"; return true;
    case Kind::Int: out += std::to_string(v.i); return true;
    case Kind::Float: out += float_json(v.f); return true;
    case Kind::String: dump_string(v.s, o.ensure_ascii, out); return true;
    case Kind::List: {
      if (v.list->empty()) { out += "[]"; return true; }
      out += "[";
      std::string inner = open_level(level + 1);
      for (size_t k = 0; k < v.list->size(); ++k) {
        out += k ? o.item_separator + inner : inner;
        if (!dump((*v.list)[k], o, level + 1, out, why)) return false;
      }
      out += open_level(level) + "]";
      return true;
    }
    case Kind::Dict: {
      if (v.dict->empty()) { out += "{}"; return true; }
      std::vector<std::pair<std::string, const Value*>> items;
      for (const auto& [key, val] : *v.dict) {
        std::string text;
        if (!key_text(key, text, why)) return false;
        items.emplace_back(text, &val);
      }
      if (o.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      out += "{";
      std::string inner = open_level(level + 1);
      for (size_t k = 0; k < items.size(); ++k) {
        out += k ? o.item_separator + inner : inner;
        dump_string(items[k].first, o.ensure_ascii, out);
        out += o.key_separator;
        if (!dump(*items[k].second, o, level + 1, out, why)) return false;
      }
      out += open_level(level) + "}";
      return true;
    }
    default:
      why = "Object of type " + v.type_name() + " is not JSON serializable";
      return false;
  }
}

}  // namespace

bool python_json_dumps(const Value& v, const JsonDumpOptions& options, std::string& out, std::string& why) {
  JsonDumpOptions o = options;
  if (o.item_separator.empty()) o.item_separator = o.indent < 0 ? ", " : ",";
  return dump(v, o, 0, out, why);
}

}  // namespace reglage::chat
