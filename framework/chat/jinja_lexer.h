// Jinja lexer: template text -> tokens, with jinja2's whitespace rules as transformers configures them
// (trim_blocks and lstrip_blocks on, keep_trailing_newline off, "-"/"+" markers on tags). Comments are dropped.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace reglage::chat {

enum class TokenType {
  Data,        // literal template text (whitespace rules already applied)
  VarBegin,    // {{
  VarEnd,      // }}
  BlockBegin,  // {%
  BlockEnd,    // %}
  Name,        // identifier or keyword (if, for, in, not, and, or, is, true, none, ...)
  String,      // string literal, escapes already decoded
  Int,
  Float,
  Op,          // operator or punctuation: + - * / // % ** ~ == != < <= > >= = . , : | ( ) [ ] { }
  End,         // end of the template
};

struct Token {
  TokenType type;
  std::string text;  // Data text, name, decoded string, operator, or the literal's source text
  int64_t int_value = 0;
  double float_value = 0.0;
  int line = 1;      // 1-based position of the token's first character in the template
  int col = 1;
};

// Throws reglage::Error "<name>:LINE:COL: ..." on an unterminated tag, comment or string, or an unexpected
// character. `name` labels messages (a file path, or "chat template").
std::vector<Token> jinja_tokenize(const std::string& source, const std::string& name);

// "Data", "'%}'", ... for parser messages.
std::string token_describe(const Token& token);

}  // namespace reglage::chat
