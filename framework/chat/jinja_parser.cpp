// Jinja parser: statements (for, if, set, macro, call, filter, break, continue, generation) and
// expressions, written after jinja2/parser.py so that precedence and filter binding match it exactly
// (`a + b | trim` filters b only; `not x is defined` is not (x is defined)).
#include "framework/chat/jinja_parser.h"

#include "framework/core/error.h"

namespace reglage::chat {
namespace {

constexpr int kMaxNesting = 200;  // nested blocks or expressions: deeper templates are refused, not recursed

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, const std::string& name) : t_(tokens), name_(name) {}

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
    Parser& parser;
    explicit DepthGuard(Parser& p) : parser(p) {
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

  // ---- statements ----

  // Parses until one of `end_tags` ({% name ...); leaves the tag name in `found` and the stream after it.
  // `opener` is the tag that opened this body (for the unclosed-block message).
  Body parse_body(const std::vector<std::string>& end_tags, std::string& found, const Token* opener) {
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

  void parse_statement(Body& body, const std::vector<std::string>& enclosing_ends, const Token* enclosing) {
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

  std::vector<std::string> parse_targets() {
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

  StmtPtr parse_for(const Token& tag) {
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

  StmtPtr parse_if(const Token& tag) {
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
  StmtPtr parse_elif_chain(const Token& elif, const Token& opener) {
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

  StmtPtr parse_set(const Token& tag) {
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

  std::vector<Param> parse_params() {
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

  StmtPtr parse_macro(const Token& tag) {
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

  StmtPtr parse_call_block(const Token& tag) {
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

  StmtPtr parse_filter_block(const Token& tag) {
    auto s = node<Stmt>(tag);
    s->kind = StmtKind::FilterBlock;
    s->expr = parse_filter(nullptr, /*piped=*/false);
    expect_block_end("filter");
    std::string found;
    s->body = parse_body({"endfilter"}, found, &tag);
    expect_block_end("endfilter");
    return s;
  }

  // ---- expressions ----

  ExprPtr parse_tuple(bool with_condexpr) {
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

  ExprPtr parse_expression(bool with_condexpr) {
    DepthGuard guard(*this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
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

  ExprPtr binary(const Token& at, const std::string& op, ExprPtr left, ExprPtr right) {
    auto e = expr_node(ExprKind::Binary, at);
    e->name = op;
    e->args = {std::move(left), std::move(right)};
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) { const Token& at = next(); left = binary(at, "or", left, parse_and()); }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) { const Token& at = next(); left = binary(at, "and", left, parse_not()); }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      const Token& at = next();
      auto e = expr_node(ExprKind::Unary, at);
      e->name = "not";
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
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

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) { const Token& at = next(); left = binary(at, at.text, left, parse_concat()); }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op("~")) { const Token& at = next(); left = binary(at, "~", left, parse_math2()); }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& at = next();
      left = binary(at, at.text, left, parse_pow());
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) { const Token& at = next(); left = binary(at, "**", left, parse_unary(true)); }
    return left;
  }

  ExprPtr parse_unary(bool with_filter) {
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

  ExprPtr parse_primary() {
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

  ExprPtr parse_postfix(ExprPtr e) {
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

  ExprPtr parse_subscript(ExprPtr target) {
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

  void parse_call_args(Expr& e) {
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

  ExprPtr parse_call(ExprPtr callee) {
    auto e = expr_node(ExprKind::Call, cur());
    e->line = callee->line;  // errors point at the function's name, not at '('
    e->col = callee->col;
    e->args.push_back(callee);
    parse_call_args(*e);
    return e;
  }

  // `| name(args)`; `subject` is null for a {% filter %} block.
  ExprPtr parse_filter(ExprPtr subject, bool piped) {
    if (piped) next();  // '|'
    const Token& at = cur();
    auto e = expr_node(ExprKind::Filter, at);
    e->name = expect_name("a filter name");
    while (is_op(".")) { next(); e->name += "." + expect_name("a filter name"); }
    e->args.push_back(subject);
    if (is_op("(")) parse_call_args(*e);
    return e;
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
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

  ExprPtr parse_test(ExprPtr subject) {
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
};

}  // namespace

Body jinja_parse(const std::vector<Token>& tokens, const std::string& name) {
  return Parser(tokens, name).parse_template();
}

}  // namespace reglage::chat
