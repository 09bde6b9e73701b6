// Jinja lexer, following jinja2/lexer.py's rules: the root state finds the next "{%", "{{" or "{#"; a "-"
// after the opener strips all whitespace before it, otherwise lstrip_blocks strips spaces that start a
// line before "{%" and "{#"; "-%}" eats the whitespace after, and trim_blocks eats one newline after "%}"
// and "#}" (never after "}}").
#include "framework/chat/jinja_lexer.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "framework/chat/jinja_value.h"
#include "framework/core/error.h"

namespace reglage::chat {
namespace {

class Lexer {
 public:
  Lexer(const std::string& source, const std::string& name) : name_(name) {
    // Newlines normalized to "\n"; a single trailing newline is dropped (keep_trailing_newline=False).
    for (size_t k = 0; k < source.size(); ++k) {
      if (source[k] == '\r') {
        src_ += '\n';
        if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
      } else {
        src_ += source[k];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (size_t k = 0; k < src_.size(); ++k)
      if (src_[k] == '\n') line_starts_.push_back(k + 1);
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      size_t tag = find_tag(pos);
      if (tag == std::string::npos) {
        push(TokenType::Data, src_.substr(pos), pos);
        break;
      }
      std::string text = src_.substr(pos, tag - pos);
      char kind = src_[tag + 1];  // '%', '{' or '#'
      char sign = tag + 2 < src_.size() ? src_[tag + 2] : 0;
      if (sign == '-') {
        text = rstrip_space(text);
      } else if (sign != '+' && kind != '{') {  // lstrip_blocks: never for {{
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) && l_pos < text.size() && all_space(text.substr(l_pos)))
          text.resize(l_pos);
      }
      if (!text.empty()) push(TokenType::Data, text, pos);
      size_t body = tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      size_t raw_body = kind == '%' ? match_raw_open(body) : std::string::npos;
      if (raw_body != std::string::npos) {
        pos = lex_raw(tag, raw_body, line_starting);
      } else if (kind == '#') {
        pos = skip_comment(tag, body);
      } else {
        push(kind == '%' ? TokenType::BlockBegin : TokenType::VarBegin, kind == '%' ? "{%" : "{{", tag);
        pos = lex_tag(tag, body, kind == '%');
      }
      line_starting = pos > 0 && src_[pos - 1] == '\n';
    }
    push(TokenType::End, "", src_.size());
    return tokens_;
  }

 private:
  std::string name_;
  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;

  void position(size_t pos, int& line, int& col) const {
    size_t lo = 0, hi = line_starts_.size();
    while (hi - lo > 1) {
      size_t mid = (lo + hi) / 2;
      (line_starts_[mid] <= pos ? lo : hi) = mid;
    }
    line = static_cast<int>(lo) + 1;
    col = 1;
    for (size_t k = line_starts_[lo]; k < pos && k < src_.size(); ++k)
      if ((static_cast<unsigned char>(src_[k]) & 0xC0) != 0x80) ++col;  // count code points
  }

  [[noreturn]] void error_at(size_t pos, const std::string& what) const {
    int line, col;
    position(pos, line, col);
    fail(name_, ":", line, ":", col, ": ", what);
  }

  Token& push(TokenType type, std::string text, size_t pos) {
    Token t{type, std::move(text)};
    position(pos, t.line, t.col);
    tokens_.push_back(std::move(t));
    return tokens_.back();
  }

  size_t find_tag(size_t pos) const {
    for (size_t k = src_.find('{', pos); k != std::string::npos; k = src_.find('{', k + 1))
      if (k + 1 < src_.size() && (src_[k + 1] == '%' || src_[k + 1] == '{' || src_[k + 1] == '#')) return k;
    return std::string::npos;
  }

  static bool all_space(const std::string& s) {
    for (uint32_t cp : utf8_decode(s))
      if (!is_python_space(cp)) return false;
    return true;
  }

  static std::string rstrip_space(const std::string& s) {
    std::vector<uint32_t> cps = utf8_decode(s);
    size_t end = cps.size();
    while (end > 0 && is_python_space(cps[end - 1])) --end;
    return utf8_encode(cps, 0, end);
  }

  size_t skip_space(size_t pos) const {
    while (pos < src_.size() && std::strchr(" \t\n\r\f\v", src_[pos]) && src_[pos] != 0) ++pos;
    return pos;
  }

  // After "%}" or "#}": trim_blocks drops one newline; "-%}" drops all whitespace; "+%}" keeps it.
  size_t after_end(size_t end_pos, char marker) const {
    if (marker == '-') return skip_space(end_pos);
    if (marker != '+' && end_pos < src_.size() && src_[end_pos] == '\n') return end_pos + 1;
    return end_pos;
  }

  // "{% raw %}" (or "-%}"): returns the position after it, or npos when the tag is not raw. No trim_blocks
  // newline removal after it, as in jinja2's root_raw_re.
  size_t match_raw_open(size_t body) const {
    size_t k = skip_space(body);
    if (src_.compare(k, 3, "raw") != 0) return std::string::npos;
    k = skip_space(k + 3);
    if (src_.compare(k, 3, "-%}") == 0) return skip_space(k + 3);
    if (src_.compare(k, 2, "%}") == 0) return k + 2;
    return std::string::npos;
  }

  // The text up to "{% endraw %}" is data, with the same whitespace rules as text before a block tag.
  size_t lex_raw(size_t tag, size_t pos, bool line_starting) {
    for (size_t open = src_.find("{%", pos); open != std::string::npos; open = src_.find("{%", open + 2)) {
      char sign = open + 2 < src_.size() ? src_[open + 2] : 0;
      size_t k = skip_space(open + 2 + ((sign == '-' || sign == '+') ? 1 : 0));
      if (src_.compare(k, 6, "endraw") != 0) continue;
      k = skip_space(k + 6);
      char marker = 0;
      if ((src_[k] == '-' || src_[k] == '+') && src_.compare(k + 1, 2, "%}") == 0) marker = src_[k++];
      if (src_.compare(k, 2, "%}") != 0) continue;
      std::string text = src_.substr(pos, open - pos);
      if (sign == '-') {
        text = rstrip_space(text);
      } else if (sign != '+') {
        size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if ((l_pos > 0 || line_starting) && l_pos < text.size() && all_space(text.substr(l_pos))) text.resize(l_pos);
      }
      if (!text.empty()) push(TokenType::Data, text, pos);
      return after_end(k + 2, marker);
    }
    error_at(tag, "missing {% endraw %} for this {% raw %}");
  }

  size_t skip_comment(size_t tag, size_t body) const {
    size_t close = src_.find("#}", body);
    if (close == std::string::npos) error_at(tag, "missing end of comment tag '#}'");
    char marker = close > body && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : 0;
    return after_end(close + 2, marker);
  }

  // Tokens inside {% ... %} or {{ ... }}; returns the position after the closing marker.
  size_t lex_tag(size_t tag, size_t pos, bool block) {
    const char* closer = block ? "%}" : "}}";
    int depth = 0;  // open brackets: "}}" inside a dict literal is not the end of a {{ tag
    while (true) {
      if (pos >= src_.size())
        error_at(tag, std::string("unexpected end of template, expected '") + closer + "' to close this tag");
      char c = src_[pos];
      if (depth == 0) {
        char marker = 0;
        size_t at = pos;
        if ((c == '-' || (c == '+' && block)) && src_.compare(pos + 1, 2, closer) == 0) marker = c, at = pos + 1;
        if (marker || src_.compare(pos, 2, closer) == 0) {
          push(block ? TokenType::BlockEnd : TokenType::VarEnd, closer, at);
          return block ? after_end(at + 2, marker) : (marker == '-' ? skip_space(at + 2) : at + 2);
        }
      }
      if (std::strchr(" \t\n\r\f\v", c) && c != 0) { ++pos; continue; }
      if (std::isdigit(static_cast<unsigned char>(c))) { pos = lex_number(pos); continue; }
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t end = pos;
        while (end < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[end])) || src_[end] == '_')) ++end;
        push(TokenType::Name, src_.substr(pos, end - pos), pos);
        pos = end;
        continue;
      }
      if (c == '\'' || c == '"') { pos = lex_string(pos); continue; }
      static const char* kOps[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]",
                                   "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"};
      const char* op = nullptr;
      for (const char* candidate : kOps)
        if (src_.compare(pos, std::strlen(candidate), candidate) == 0) { op = candidate; break; }
      if (!op) error_at(pos, std::string("unexpected character '") + c + "' in a tag");
      if (*op == '(' || *op == '[' || *op == '{') ++depth;
      if ((*op == ')' || *op == ']' || *op == '}') && depth > 0) --depth;
      push(TokenType::Op, op, pos);
      pos += std::strlen(op);
    }
  }

  size_t lex_number(size_t pos) {
    size_t end = pos;
    auto digits = [&] { while (end < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[end])) || src_[end] == '_')) ++end; };
    digits();
    bool is_float = false;
    if (end + 1 < src_.size() && src_[end] == '.' && std::isdigit(static_cast<unsigned char>(src_[end + 1]))) {
      ++end;
      digits();
      is_float = true;
    }
    if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
      size_t e = end + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
      if (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) {
        end = e;
        digits();
        is_float = true;
      }
    }
    std::string text = src_.substr(pos, end - pos), clean;
    for (char ch : text)
      if (ch != '_') clean += ch;
    Token& t = push(is_float ? TokenType::Float : TokenType::Int, text, pos);
    if (is_float) {
      t.float_value = std::strtod(clean.c_str(), nullptr);
    } else {
      errno = 0;
      t.int_value = std::strtoll(clean.c_str(), nullptr, 10);
      if (errno == ERANGE) error_at(pos, "integer literal " + text + " does not fit in 64 bits");
    }
    return end;
  }

  // A quoted literal decoded like Python's "unicode-escape": \n \t \\ \' \" \xNN \uNNNN \UNNNNNNNN \ooo;
  // an unknown escape keeps its backslash.
  size_t lex_string(size_t start) {
    char quote = src_[start];
    std::string out;
    size_t pos = start + 1;
    while (true) {
      if (pos >= src_.size()) error_at(start, "unterminated string literal");
      char c = src_[pos];
      if (c == quote) break;
      if (c != '\\' || pos + 1 >= src_.size()) { out += c; ++pos; continue; }
      char e = src_[pos + 1];
      pos += 2;
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '\n': break;  // line continuation
        case 'x': case 'u': case 'U': {
          size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (pos + n > src_.size()) error_at(pos - 2, std::string("truncated \\") + e + " escape");
          std::string hex = src_.substr(pos, n);
          if (hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
            error_at(pos - 2, std::string("truncated \\") + e + " escape");
          utf8_append(out, static_cast<uint32_t>(std::stoul(hex, nullptr, 16)));
          pos += n;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            uint32_t v = e - '0';
            for (int k = 0; k < 2 && pos < src_.size() && src_[pos] >= '0' && src_[pos] <= '7'; ++k)
              v = v * 8 + (src_[pos++] - '0');
            utf8_append(out, v);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    push(TokenType::String, out, start);
    return pos + 1;
  }
};

}  // namespace

std::vector<Token> jinja_tokenize(const std::string& source, const std::string& name) {
  return Lexer(source, name).run();
}

std::string token_describe(const Token& token) {
  switch (token.type) {
    case TokenType::Data: return "template text";
    case TokenType::End: return "end of template";
    case TokenType::String: return "string literal";
    default: return "'" + token.text + "'";
  }
}

}  // namespace reglage::chat
