// Jinja parser, statements: for, if/elif/else, set (also ns.attr and block set), macro, call, filter,
// break, continue, raw (in the lexer) and transformers' generation blocks. Expressions are in
// jinja_parse_expr.cpp; both follow jinja2/parser.py.
#include "framework/chat/jinja_parser_impl.h"

namespace reglage::chat {

// Parses until one of `end_tags` ({% name ...); leaves the tag name in `found` and the stream after it.
// `opener` is the tag that opened this body (for the unclosed-block message).
Body JinjaParser::parse_body(const std::vector<std::string>& end_tags, std::string& found, const Token* opener) {
  DepthGuard guard(*this);
  Body body;
  while (true) {
    const Token& t = cur();
    if (t.type == TokenType::End) {
      if (!opener) return body;
      error_at(*opener, "unclosed '" + opener->text + "' block: the template ends before {% " + end_tags.back() + " %}");
    }
    if (t.type == TokenType::Data) {
      auto s = node<Stmt>(t);
      s->kind = StmtKind::Text;
      s->text = t.text;
      body.push_back(s);
      next();
    } else if (t.type == TokenType::VarBegin) {
      next();
      auto s = node<Stmt>(t);
      s->kind = StmtKind::Output;
      s->expr = parse_tuple(true);
      if (cur().type != TokenType::VarEnd) error_at(cur(), "expected '}}', found " + token_describe(cur()));
      next();
      body.push_back(s);
    } else if (t.type == TokenType::BlockBegin) {
      const Token& tag = peek();
      if (tag.type != TokenType::Name) error_at(tag, "expected a tag name after '{%', found " + token_describe(tag));
      for (const auto& end : end_tags)
        if (tag.text == end) {
          next();
          next();
          found = end;
          return body;
        }
      next();
      parse_statement(body, end_tags, opener);
    } else {
      error_at(t, "unexpected " + token_describe(t));
    }
  }
}

void JinjaParser::parse_statement(Body& body, const std::vector<std::string>& enclosing_ends, const Token* enclosing) {
  const Token& tag = next();
  const std::string& w = tag.text;
  if (w == "for") return body.push_back(parse_for(tag));
  if (w == "if") return body.push_back(parse_if(tag));
  if (w == "set") return body.push_back(parse_set(tag));
  if (w == "macro") return body.push_back(parse_macro(tag));
  if (w == "call") return body.push_back(parse_call_block(tag));
  if (w == "filter") return body.push_back(parse_filter_block(tag));
  if (w == "break" || w == "continue") {
    auto s = node<Stmt>(tag);
    s->kind = w == "break" ? StmtKind::Break : StmtKind::Continue;
    expect_block_end(w);
    return body.push_back(s);
  }
  if (w == "generation") {  // transformers' assistant-mask marker: its body renders as plain content
    expect_block_end(w);
    std::string found;
    Body inner = parse_body({"endgeneration"}, found, &tag);
    expect_block_end("endgeneration");
    body.insert(body.end(), inner.begin(), inner.end());
    return;
  }
  static const char* kUnsupported[] = {"extends", "include", "import", "from", "block", "with",
                                       "autoescape", "trans", "do"};
  for (const char* u : kUnsupported)
    if (w == u) error_at(tag, "the '" + w + "' tag is not supported by this renderer");
  if (w.rfind("end", 0) == 0 || w == "else" || w == "elif") {
    if (!enclosing) error_at(tag, "unexpected '" + w + "': no block is open here");
    error_at(tag, "unexpected '" + w + "': the innermost open block is '" + enclosing->text + "' (line " +
                      std::to_string(enclosing->line) + "), closed by {% " + enclosing_ends.back() + " %}");
  }
  std::string hint;
  if (enclosing && !enclosing_ends.empty()) hint = " (the innermost open block is '" + enclosing->text + "', closed by {% " + enclosing_ends.back() + " %})";
  error_at(tag, "unknown tag '" + w + "'" + hint);
}

std::vector<std::string> JinjaParser::parse_targets() {
  std::vector<std::string> names;
  bool paren = is_op("(");
  if (paren) next();
  names.push_back(expect_name("a variable name"));
  while (is_op(",")) {
    next();
    if (cur().type != TokenType::Name) break;
    names.push_back(next().text);
  }
  if (paren) expect_op(")");
  return names;
}

StmtPtr JinjaParser::parse_for(const Token& tag) {
  auto s = node<Stmt>(tag);
  s->kind = StmtKind::For;
  s->targets = parse_targets();
  if (!is_name("in")) error_at(cur(), "expected 'in' in the for tag, found " + token_describe(cur()));
  next();
  s->expr = parse_tuple(false);
  if (is_name("if")) { next(); s->filter = parse_expression(true); }
  if (is_name("recursive")) error_at(cur(), "recursive for loops are not supported by this renderer");
  expect_block_end("for");
  std::string found;
  s->body = parse_body({"else", "endfor"}, found, &tag);
  if (found == "else") {
    expect_block_end("else");
    s->else_body = parse_body({"endfor"}, found, &tag);
  }
  expect_block_end("endfor");
  return s;
}

StmtPtr JinjaParser::parse_if(const Token& tag) {
  auto s = node<Stmt>(tag);
  s->kind = StmtKind::If;
  s->expr = parse_tuple(false);
  expect_block_end(tag.text);
  std::string found;
  s->body = parse_body({"elif", "else", "endif"}, found, &tag);
  if (found == "elif") {
    const Token& elif = t_[p_ - 1];
    s->else_body.push_back(parse_elif_chain(elif, tag));
    return s;
  }
  if (found == "else") {
    expect_block_end("else");
    s->else_body = parse_body({"endif"}, found, &tag);
  }
  expect_block_end("endif");
  return s;
}

// An elif continues the same if block: it shares the one {% endif %}.
StmtPtr JinjaParser::parse_elif_chain(const Token& elif, const Token& opener) {
  auto s = node<Stmt>(elif);
  s->kind = StmtKind::If;
  s->expr = parse_tuple(false);
  expect_block_end("elif");
  std::string found;
  s->body = parse_body({"elif", "else", "endif"}, found, &opener);
  if (found == "elif") {
    s->else_body.push_back(parse_elif_chain(t_[p_ - 1], opener));
    return s;
  }
  if (found == "else") {
    expect_block_end("else");
    s->else_body = parse_body({"endif"}, found, &opener);
  }
  expect_block_end("endif");
  return s;
}

StmtPtr JinjaParser::parse_set(const Token& tag) {
  auto s = node<Stmt>(tag);
  s->kind = StmtKind::Set;
  std::string first = expect_name("a variable name after 'set'");
  s->targets.push_back(first);
  if (is_op(".")) {  // set ns.attr = value
    next();
    s->text = expect_name("an attribute name");
  } else {
    while (is_op(",")) { next(); s->targets.push_back(expect_name("a variable name")); }
  }
  if (is_op("=")) {
    next();
    s->expr = parse_tuple(true);
    expect_block_end("set");
    return s;
  }
  if (!s->text.empty() || s->targets.size() != 1) error_at(cur(), "expected '=' in the set tag, found " + token_describe(cur()));
  if (is_op("|")) error_at(cur(), "filters on a block set are not supported by this renderer");
  s->kind = StmtKind::SetBlock;
  expect_block_end("set");
  std::string found;
  s->body = parse_body({"endset"}, found, &tag);
  expect_block_end("endset");
  return s;
}

std::vector<Param> JinjaParser::parse_params() {
  std::vector<Param> params;
  expect_op("(");
  while (!is_op(")")) {
    if (!params.empty()) expect_op(",");
    if (is_op(")")) break;
    Param p;
    p.name = expect_name("a parameter name");
    if (is_op("=")) { next(); p.default_value = parse_expression(true); }
    params.push_back(p);
  }
  next();
  return params;
}

StmtPtr JinjaParser::parse_macro(const Token& tag) {
  auto s = node<Stmt>(tag);
  s->kind = StmtKind::Macro;
  s->text = expect_name("a macro name");
  s->params = parse_params();
  expect_block_end("macro");
  std::string found;
  s->body = parse_body({"endmacro"}, found, &tag);
  expect_block_end("endmacro");
  return s;
}

StmtPtr JinjaParser::parse_call_block(const Token& tag) {
  auto s = node<Stmt>(tag);
  s->kind = StmtKind::CallBlock;
  s->text = "caller";  // the name its body is called by, for messages
  if (is_op("(")) s->params = parse_params();
  s->expr = parse_expression(true);
  if (s->expr->kind != ExprKind::Call) error_at(tag, "expected a macro call after 'call'");
  expect_block_end("call");
  std::string found;
  s->body = parse_body({"endcall"}, found, &tag);
  expect_block_end("endcall");
  return s;
}

StmtPtr JinjaParser::parse_filter_block(const Token& tag) {
  auto s = node<Stmt>(tag);
  s->kind = StmtKind::FilterBlock;
  s->expr = parse_filter(nullptr, /*piped=*/false);
  expect_block_end("filter");
  std::string found;
  s->body = parse_body({"endfilter"}, found, &tag);
  expect_block_end("endfilter");
  return s;
}
Body jinja_parse(const std::vector<Token>& tokens, const std::string& name) {
  return JinjaParser(tokens, name).parse_template();
}

}  // namespace reglage::chat
