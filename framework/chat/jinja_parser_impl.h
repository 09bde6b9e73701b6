// Internal to the Jinja parser: the recursive-descent JinjaParser shared by jinja_parser.cpp (statements) and
// jinja_parse_expr.cpp (expressions). Not for use outside framework/chat.
#pragma once
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "framework/chat/jinja_parser.h"
#include "framework/core/error.h"

namespace reglage::chat {

constexpr int kMaxNesting = 200;  // nested blocks or expressions: deeper templates are refused, not recursed

class JinjaParser {
 public:
  JinjaParser(const std::vector<Token>& tokens, const std::string& name) : t_(tokens), name_(name) {}

  Body parse_template() {
    std::string end_tag;
    Body body = parse_body({}, end_tag, nullptr);
    return body;
  }

 private:
  const std::vector<Token>& t_;
  std::string name_;
  size_t p_ = 0;
  int depth_ = 0;

  struct DepthGuard {
    JinjaParser& parser;
    explicit DepthGuard(JinjaParser& p) : parser(p) {
      if (++parser.depth_ > kMaxNesting)
        parser.error_at(parser.cur(), "template nests deeper than " + std::to_string(kMaxNesting) + " levels");
    }
    ~DepthGuard() { --parser.depth_; }
  };

  const Token& cur() const { return t_[p_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  const Token& next() { const Token& t = t_[p_]; if (p_ + 1 < t_.size()) ++p_; return t; }

  [[noreturn]] void error_at(const Token& t, const std::string& what) const {
    fail(name_, ":", t.line, ":", t.col, ": ", what);
  }
  bool is_op(const char* op) const { return cur().type == TokenType::Op && cur().text == op; }
  bool is_name(const char* word) const { return cur().type == TokenType::Name && cur().text == word; }
  void expect_op(const char* op) {
    if (!is_op(op)) error_at(cur(), std::string("expected '") + op + "', found " + token_describe(cur()));
    next();
  }
  std::string expect_name(const char* what) {
    if (cur().type != TokenType::Name) error_at(cur(), std::string("expected ") + what + ", found " + token_describe(cur()));
    return next().text;
  }
  void expect_block_end(const std::string& tag) {
    if (cur().type != TokenType::BlockEnd)
      error_at(cur(), "expected '%}' to end the '" + tag + "' tag, found " + token_describe(cur()));
    next();
  }

  template <typename T>
  static std::shared_ptr<T> node(const Token& at) {
    auto n = std::make_shared<T>();
    n->line = at.line;
    n->col = at.col;
    return n;
  }
  static std::shared_ptr<Expr> expr_node(ExprKind kind, const Token& at) {
    auto e = node<Expr>(at);
    e->kind = kind;
    return e;
  }

  // statements (jinja_parser.cpp)
  Body parse_body(const std::vector<std::string>& end_tags, std::string& found, const Token* opener);
  void parse_statement(Body& body, const std::vector<std::string>& enclosing_ends, const Token* enclosing);
  std::vector<std::string> parse_targets();
  StmtPtr parse_for(const Token& tag);
  StmtPtr parse_if(const Token& tag);
  StmtPtr parse_elif_chain(const Token& elif, const Token& opener);
  StmtPtr parse_set(const Token& tag);
  std::vector<Param> parse_params();
  StmtPtr parse_macro(const Token& tag);
  StmtPtr parse_call_block(const Token& tag);
  StmtPtr parse_filter_block(const Token& tag);

  // expressions (jinja_parse_expr.cpp)
  ExprPtr parse_tuple(bool with_condexpr);
  ExprPtr parse_expression(bool with_condexpr);
  ExprPtr parse_condexpr();
  ExprPtr binary(const Token& at, const std::string& op, ExprPtr left, ExprPtr right);
  ExprPtr parse_or();
  ExprPtr parse_and();
  ExprPtr parse_not();
  ExprPtr parse_compare();
  ExprPtr parse_math1();
  ExprPtr parse_concat();
  ExprPtr parse_math2();
  ExprPtr parse_pow();
  ExprPtr parse_unary(bool with_filter);
  ExprPtr parse_primary();
  ExprPtr parse_postfix(ExprPtr e);
  ExprPtr parse_subscript(ExprPtr target);
  void parse_call_args(Expr& e);
  ExprPtr parse_call(ExprPtr callee);
  ExprPtr parse_filter(ExprPtr subject, bool piped);
  ExprPtr parse_filter_expr(ExprPtr e);
  ExprPtr parse_test(ExprPtr subject);
};

}  // namespace reglage::chat
