// Jinja parser, expressions, written after jinja2/parser.py so that precedence and filter binding match it
// exactly (`a + b | trim` filters b only; `not x is defined` is not (x is defined); `-x | abs` is abs(-x)).
#include "framework/chat/jinja_parser_impl.h"

namespace reglage::chat {

ExprPtr JinjaParser::parse_tuple(bool with_condexpr) {
  const Token& start = cur();
  ExprPtr first = parse_expression(with_condexpr);
  if (!is_op(",")) return first;
  auto tuple = expr_node(ExprKind::Tuple, start);
  tuple->args.push_back(first);
  while (is_op(",")) {
    next();
    if (cur().type == TokenType::BlockEnd || cur().type == TokenType::VarEnd || is_op(")")) break;
    tuple->args.push_back(parse_expression(with_condexpr));
  }
  return tuple;
}

ExprPtr JinjaParser::parse_expression(bool with_condexpr) {
  DepthGuard guard(*this);
  return with_condexpr ? parse_condexpr() : parse_or();
}

ExprPtr JinjaParser::parse_condexpr() {
  const Token& start = cur();
  ExprPtr expr = parse_or();
  while (is_name("if")) {
    next();
    auto cond = expr_node(ExprKind::Cond, start);
    cond->args.push_back(expr);
    cond->args.push_back(parse_or());
    if (is_name("else")) { next(); cond->args.push_back(parse_condexpr()); }
    else cond->args.push_back(nullptr);
    expr = cond;
  }
  return expr;
}

ExprPtr JinjaParser::binary(const Token& at, const std::string& op, ExprPtr left, ExprPtr right) {
  auto e = expr_node(ExprKind::Binary, at);
  e->name = op;
  e->args = {std::move(left), std::move(right)};
  return e;
}

ExprPtr JinjaParser::parse_or() {
  ExprPtr left = parse_and();
  while (is_name("or")) { const Token& at = next(); left = binary(at, "or", left, parse_and()); }
  return left;
}

ExprPtr JinjaParser::parse_and() {
  ExprPtr left = parse_not();
  while (is_name("and")) { const Token& at = next(); left = binary(at, "and", left, parse_not()); }
  return left;
}

ExprPtr JinjaParser::parse_not() {
  if (is_name("not")) {
    const Token& at = next();
    auto e = expr_node(ExprKind::Unary, at);
    e->name = "not";
    e->args.push_back(parse_not());
    return e;
  }
  return parse_compare();
}

ExprPtr JinjaParser::parse_compare() {
  const Token& start = cur();
  ExprPtr first = parse_math1();
  std::shared_ptr<Expr> cmp;
  while (true) {
    std::string op;
    if (cur().type == TokenType::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                        cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
      op = next().text;
    } else if (is_name("in")) {
      next();
      op = "in";
    } else if (is_name("not") && peek().type == TokenType::Name && peek().text == "in") {
      next();
      next();
      op = "not in";
    } else {
      break;
    }
    if (!cmp) { cmp = expr_node(ExprKind::Compare, start); cmp->args.push_back(first); }
    cmp->ops.push_back(op);
    cmp->args.push_back(parse_math1());
  }
  return cmp ? ExprPtr(cmp) : first;
}

ExprPtr JinjaParser::parse_math1() {
  ExprPtr left = parse_concat();
  while (is_op("+") || is_op("-")) { const Token& at = next(); left = binary(at, at.text, left, parse_concat()); }
  return left;
}

ExprPtr JinjaParser::parse_concat() {
  ExprPtr left = parse_math2();
  while (is_op("~")) { const Token& at = next(); left = binary(at, "~", left, parse_math2()); }
  return left;
}

ExprPtr JinjaParser::parse_math2() {
  ExprPtr left = parse_pow();
  while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
    const Token& at = next();
    left = binary(at, at.text, left, parse_pow());
  }
  return left;
}

ExprPtr JinjaParser::parse_pow() {
  ExprPtr left = parse_unary(true);
  while (is_op("**")) { const Token& at = next(); left = binary(at, "**", left, parse_unary(true)); }
  return left;
}

ExprPtr JinjaParser::parse_unary(bool with_filter) {
  DepthGuard guard(*this);
  ExprPtr node_ptr;
  if (is_op("-") || is_op("+")) {
    const Token& at = next();
    auto e = expr_node(ExprKind::Unary, at);
    e->name = at.text;
    e->args.push_back(parse_unary(false));
    node_ptr = e;
  } else {
    node_ptr = parse_primary();
  }
  node_ptr = parse_postfix(node_ptr);
  if (with_filter) node_ptr = parse_filter_expr(node_ptr);
  return node_ptr;
}

ExprPtr JinjaParser::parse_primary() {
  const Token& t = cur();
  if (t.type == TokenType::Name) {
    next();
    if (t.text == "true" || t.text == "True" || t.text == "false" || t.text == "False") {
      auto e = expr_node(ExprKind::Literal, t);
      e->literal = Value::boolean(t.text[0] == 't' || t.text[0] == 'T');
      return e;
    }
    if (t.text == "none" || t.text == "None") {
      auto e = expr_node(ExprKind::Literal, t);
      e->literal = Value::none();
      return e;
    }
    auto e = expr_node(ExprKind::Name, t);
    e->name = t.text;
    return e;
  }
  if (t.type == TokenType::String) {
    std::string text;
    while (cur().type == TokenType::String) text += next().text;  // adjacent literals concatenate
    auto e = expr_node(ExprKind::Literal, t);
    e->literal = Value::string(text);
    return e;
  }
  if (t.type == TokenType::Int || t.type == TokenType::Float) {
    next();
    auto e = expr_node(ExprKind::Literal, t);
    e->literal = t.type == TokenType::Int ? Value::integer(t.int_value) : Value::floating(t.float_value);
    return e;
  }
  if (is_op("(")) {
    next();
    if (is_op(")")) { next(); return expr_node(ExprKind::Tuple, t); }
    ExprPtr inner = parse_expression(true);
    if (is_op(",")) {
      auto tuple = expr_node(ExprKind::Tuple, t);
      tuple->args.push_back(inner);
      while (is_op(",")) {
        next();
        if (is_op(")")) break;
        tuple->args.push_back(parse_expression(true));
      }
      inner = tuple;
    }
    expect_op(")");
    return inner;
  }
  if (is_op("[")) {
    next();
    auto list = expr_node(ExprKind::List, t);
    while (!is_op("]")) {
      if (!list->args.empty()) expect_op(",");
      if (is_op("]")) break;
      list->args.push_back(parse_expression(true));
    }
    next();
    return list;
  }
  if (is_op("{")) {
    next();
    auto dict = expr_node(ExprKind::Dict, t);
    while (!is_op("}")) {
      if (!dict->args.empty()) expect_op(",");
      if (is_op("}")) break;
      dict->args.push_back(parse_expression(true));
      expect_op(":");
      dict->args.push_back(parse_expression(true));
    }
    next();
    return dict;
  }
  error_at(t, "expected an expression, found " + token_describe(t));
}

ExprPtr JinjaParser::parse_postfix(ExprPtr e) {
  while (true) {
    if (is_op(".")) {
      const Token& at = next();
      if (cur().type == TokenType::Int) {
        auto item = expr_node(ExprKind::GetItem, at);
        auto index = expr_node(ExprKind::Literal, cur());
        index->literal = Value::integer(next().int_value);
        item->args = {e, index};
        e = item;
        continue;
      }
      auto attr = expr_node(ExprKind::GetAttr, at);
      attr->name = expect_name("an attribute name after '.'");
      attr->args.push_back(e);
      e = attr;
    } else if (is_op("[")) {
      e = parse_subscript(e);
    } else if (is_op("(")) {
      e = parse_call(e);
    } else {
      return e;
    }
  }
}

ExprPtr JinjaParser::parse_subscript(ExprPtr target) {
  const Token& at = next();  // '['
  ExprPtr parts[3];
  int colons = 0;
  while (!is_op("]")) {
    if (is_op(":")) {
      if (++colons > 2) error_at(cur(), "a slice takes at most two ':'");
      next();
      continue;
    }
    if (parts[colons]) error_at(cur(), "expected ']' or ':', found " + token_describe(cur()));
    parts[colons] = parse_expression(true);
  }
  next();
  if (colons == 0) {
    if (!parts[0]) error_at(at, "empty subscript");
    auto e = expr_node(ExprKind::GetItem, at);
    e->args = {target, parts[0]};
    return e;
  }
  auto e = expr_node(ExprKind::Slice, at);
  e->args = {target, parts[0], parts[1], parts[2]};
  return e;
}

void JinjaParser::parse_call_args(Expr& e) {
  expect_op("(");
  bool first = true;
  while (!is_op(")")) {
    if (!first) expect_op(",");
    first = false;
    if (is_op(")")) break;
    if (is_op("*") || is_op("**")) error_at(cur(), "*args and **kwargs in calls are not supported by this renderer");
    if (cur().type == TokenType::Name && peek().type == TokenType::Op && peek().text == "=") {
      std::string key = next().text;
      next();
      e.kwargs.emplace_back(key, parse_expression(true));
    } else {
      if (!e.kwargs.empty()) error_at(cur(), "a positional argument follows keyword arguments");
      e.args.push_back(parse_expression(true));
    }
  }
  next();
}

ExprPtr JinjaParser::parse_call(ExprPtr callee) {
  auto e = expr_node(ExprKind::Call, cur());
  e->line = callee->line;  // errors point at the function's name, not at '('
  e->col = callee->col;
  e->args.push_back(callee);
  parse_call_args(*e);
  return e;
}

// `| name(args)`; `subject` is null for a {% filter %} block.
ExprPtr JinjaParser::parse_filter(ExprPtr subject, bool piped) {
  if (piped) next();  // '|'
  const Token& at = cur();
  auto e = expr_node(ExprKind::Filter, at);
  e->name = expect_name("a filter name");
  while (is_op(".")) { next(); e->name += "." + expect_name("a filter name"); }
  e->args.push_back(subject);
  if (is_op("(")) parse_call_args(*e);
  return e;
}

ExprPtr JinjaParser::parse_filter_expr(ExprPtr e) {
  while (true) {
    if (is_op("|")) {
      e = parse_filter(e, true);
    } else if (is_name("is")) {
      e = parse_test(e);
    } else if (is_op("(")) {
      e = parse_call(e);
    } else {
      return e;
    }
  }
}

ExprPtr JinjaParser::parse_test(ExprPtr subject) {
  next();  // 'is'
  auto e = expr_node(ExprKind::Test, cur());
  if (is_name("not")) { next(); e->negated = true; }
  e->name = expect_name("a test name after 'is'");
  while (is_op(".")) { next(); e->name += "." + expect_name("a test name"); }
  e->args.push_back(subject);
  const Token& t = cur();
  if (is_op("(")) {
    parse_call_args(*e);
  } else if ((t.type == TokenType::Name || t.type == TokenType::String || t.type == TokenType::Int ||
              t.type == TokenType::Float || is_op("[") || is_op("{")) &&
             !(is_name("else") || is_name("or") || is_name("and"))) {
    if (is_name("is")) error_at(t, "tests cannot be chained with 'is'");
    e->args.push_back(parse_postfix(parse_primary()));
  }
  return e;
}
}  // namespace reglage::chat
