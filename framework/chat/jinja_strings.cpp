// Python str methods by code point.
#include "framework/chat/jinja_strings.h"

#include <algorithm>

#include "framework/chat/jinja_eval.h"
#include "framework/chat/jinja_value.h"

namespace reglage::chat {
namespace {

using Cps = std::vector<uint32_t>;

std::string encode(const Cps& cps, size_t begin, size_t end) { return utf8_encode(cps, begin, end); }

// Simple case mappings for the scripts chat text usually holds; other code points are left alone.
uint32_t to_upper(uint32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if (c < 0x80) return c;
  if ((c >= 0xE0 && c <= 0xFE && c != 0xF7)) return c - 32;
  if (c == 0xFF) return 0x178;
  if (c == 0xB5) return 0x39C;
  if (c >= 0x100 && c <= 0x17F) {
    if (c == 0x131) return 'I';
    if (c == 0x17F) return 'S';
    bool odd_lower = (c < 0x138) || (c >= 0x14A && c < 0x178);
    if (odd_lower && (c & 1)) return c - 1;
    if (!odd_lower && c > 0x138 && c != 0x178 && !(c & 1) && c != 0x149) return c - 1;
    return c;
  }
  if (c >= 0x3B1 && c <= 0x3C9 && c != 0x3C2) return c - 32;
  if (c == 0x3C2) return 0x3A3;
  if (c >= 0x3AC && c <= 0x3AF) return c == 0x3AC ? 0x386 : c - 37;
  if (c >= 0x430 && c <= 0x44F) return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  return c;
}

uint32_t to_lower(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0x80) return c;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 32;
  if (c == 0x178) return 0xFF;
  if (c >= 0x100 && c <= 0x17F) {
    if (c == 0x130) return 'i';
    bool even_upper = (c < 0x138) || (c >= 0x14A && c < 0x178);
    if (even_upper && !(c & 1)) return c + 1;
    if (!even_upper && c > 0x138 && c < 0x149 && (c & 1)) return c + 1;
    if (c >= 0x179 && c <= 0x17E && (c & 1)) return c + 1;
    return c;
  }
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;
  if (c == 0x386) return 0x3AC;
  if (c >= 0x388 && c <= 0x38A) return c + 37;
  if (c >= 0x410 && c <= 0x42F) return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  return c;
}

bool is_cased(uint32_t c) { return to_upper(c) != c || to_lower(c) != c || (c >= 0xDF && c <= 0xFF && c != 0xF7); }

bool in_chars(uint32_t c, const Cps& chars) { return std::find(chars.begin(), chars.end(), c) != chars.end(); }

}  // namespace

size_t py_len(const std::string& s) { return utf8_decode(s).size(); }

std::string py_strip(const std::string& s, StripSide side, bool chars_given, const std::string& chars) {
  Cps cps = utf8_decode(s), set = utf8_decode(chars);
  auto drop = [&](uint32_t c) { return chars_given ? in_chars(c, set) : is_python_space(c); };
  size_t begin = 0, end = cps.size();
  if (side != StripSide::Right) while (begin < end && drop(cps[begin])) ++begin;
  if (side != StripSide::Left) while (end > begin && drop(cps[end - 1])) --end;
  return encode(cps, begin, end);
}

std::vector<std::string> py_split(const std::string& s, bool sep_given, const std::string& sep, long maxsplit) {
  std::vector<std::string> parts;
  if (sep_given) {
    if (sep.empty()) jinja_raise("empty separator");
    size_t pos = 0;
    while (maxsplit < 0 || static_cast<long>(parts.size()) < maxsplit) {
      size_t hit = s.find(sep, pos);
      if (hit == std::string::npos) break;
      parts.push_back(s.substr(pos, hit - pos));
      pos = hit + sep.size();
    }
    parts.push_back(s.substr(pos));
    return parts;
  }
  Cps cps = utf8_decode(s);
  size_t k = 0, n = cps.size();
  while (true) {
    while (k < n && is_python_space(cps[k])) ++k;
    if (k >= n) break;
    if (maxsplit >= 0 && static_cast<long>(parts.size()) >= maxsplit) {
      size_t end = n;
      while (end > k && is_python_space(cps[end - 1])) --end;
      parts.push_back(encode(cps, k, end));
      break;
    }
    size_t start = k;
    while (k < n && !is_python_space(cps[k])) ++k;
    parts.push_back(encode(cps, start, k));
  }
  return parts;
}

std::vector<std::string> py_rsplit(const std::string& s, bool sep_given, const std::string& sep, long maxsplit) {
  if (maxsplit < 0) return py_split(s, sep_given, sep, -1);
  if (!sep_given) {  // rare in templates: split fully, then rejoin the head with single spaces is not exact
    std::vector<std::string> all = py_split(s, false, "", -1);
    if (static_cast<long>(all.size()) <= maxsplit + 1) return all;
    jinja_raise("rsplit() with maxsplit and no separator is not supported by this renderer");
  }
  if (sep.empty()) jinja_raise("empty separator");
  std::vector<std::string> parts;
  size_t end = s.size();
  while (static_cast<long>(parts.size()) < maxsplit) {
    size_t hit = end >= sep.size() ? s.rfind(sep, end - sep.size()) : std::string::npos;
    if (hit == std::string::npos) break;
    parts.insert(parts.begin(), s.substr(hit + sep.size(), end - hit - sep.size()));
    end = hit;
  }
  parts.insert(parts.begin(), s.substr(0, end));
  return parts;
}

std::string py_replace(const std::string& s, const std::string& old, const std::string& repl, long count) {
  std::string out;
  long done = 0;
  if (old.empty()) {  // Python inserts `repl` before every code point and at the end
    Cps cps = utf8_decode(s);
    for (size_t k = 0; k <= cps.size(); ++k) {
      if (count < 0 || done < count) { out += repl; ++done; }
      if (k < cps.size()) out += encode(cps, k, k + 1);
    }
    return out;
  }
  size_t pos = 0;
  while (count < 0 || done < count) {
    size_t hit = s.find(old, pos);
    if (hit == std::string::npos) break;
    out += s.substr(pos, hit - pos) + repl;
    pos = hit + old.size();
    ++done;
  }
  return out + s.substr(pos);
}

std::vector<std::string> py_splitlines(const std::string& s, bool keepends) {
  Cps cps = utf8_decode(s);
  std::vector<std::string> lines;
  size_t start = 0, k = 0;
  auto is_break = [](uint32_t c) {
    return c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || (c >= 0x1C && c <= 0x1E) || c == 0x85 ||
           c == 0x2028 || c == 0x2029;
  };
  while (k < cps.size()) {
    if (!is_break(cps[k])) { ++k; continue; }
    size_t eol = k;
    k += (cps[k] == '\r' && k + 1 < cps.size() && cps[k + 1] == '\n') ? 2 : 1;
    lines.push_back(encode(cps, start, keepends ? k : eol));
    start = k;
  }
  if (start < cps.size()) lines.push_back(encode(cps, start, cps.size()));
  return lines;
}

std::string py_upper(const std::string& s) {
  Cps cps = utf8_decode(s);
  std::string out;
  for (uint32_t c : cps) {
    if (c == 0xDF) { out += "SS"; continue; }  // ß
    utf8_append(out, to_upper(c));
  }
  return out;
}

std::string py_lower(const std::string& s) {
  Cps cps = utf8_decode(s);
  for (auto& c : cps) c = to_lower(c);
  return encode(cps, 0, cps.size());
}

std::string py_title(const std::string& s) {
  Cps cps = utf8_decode(s);
  bool previous_cased = false;
  for (auto& c : cps) {
    bool cased = is_cased(c);
    c = previous_cased ? to_lower(c) : to_upper(c);
    previous_cased = cased;
  }
  return encode(cps, 0, cps.size());
}

std::string py_capitalize(const std::string& s) {
  Cps cps = utf8_decode(s);
  for (size_t k = 0; k < cps.size(); ++k) cps[k] = k == 0 ? to_upper(cps[k]) : to_lower(cps[k]);
  return encode(cps, 0, cps.size());
}

std::string jinja_title(const std::string& s) {
  // re.split(r"([-\s({\[<]+)") keeps the separators; each piece gets item[0].upper() + item[1:].lower().
  Cps cps = utf8_decode(s);
  auto is_sep = [](uint32_t c) { return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || is_python_space(c); };
  std::string out;
  size_t k = 0;
  while (k < cps.size()) {
    size_t start = k;
    bool sep = is_sep(cps[k]);
    while (k < cps.size() && is_sep(cps[k]) == sep) ++k;
    Cps piece(cps.begin() + start, cps.begin() + k);
    for (size_t j = 0; j < piece.size(); ++j) piece[j] = j == 0 ? to_upper(piece[j]) : to_lower(piece[j]);
    out += encode(piece, 0, piece.size());
  }
  return out;
}

}  // namespace reglage::chat
