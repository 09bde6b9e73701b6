// Jinja AST and parser: tokens -> a tree of statements and expressions, with jinja2's operator precedence
// (lowest first): `x if c else y`, or, and, not, comparisons (== != < <= > >= in, not in), + -, ~,
// * / // %, **, unary - +, then postfix (.attr, [item], [a:b:c], call), filters (|f) and tests (is t).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "framework/chat/jinja_lexer.h"
#include "framework/chat/jinja_value.h"

namespace reglage::chat {

struct Expr;
using ExprPtr = std::shared_ptr<const Expr>;

enum class ExprKind {
  Literal,   // literal
  Name,      // name
  List,      // [args...]
  Tuple,     // (args...)
  Dict,      // {args[0]: args[1], ...}: keys and values alternate
  GetAttr,   // args[0].name
  GetItem,   // args[0][args[1]]
  Slice,     // args[0][args[1]:args[2]:args[3]]; absent parts are null
  Call,      // args[0](args[1..], kwargs)
  Filter,    // args[0] | name(args[1..], kwargs)
  Test,      // args[0] is [not] name(args[1..], kwargs); negated
  Unary,     // name in {"-", "+", "not"} applied to args[0]
  Binary,    // args[0] name args[1]: + - * / // % ** ~ and or
  Compare,   // args[0] ops[0] args[1] ops[1] args[2] ... (Python chaining)
  Cond,      // args[0] if args[1] else args[2] (args[2] may be null)
};

struct Expr {
  ExprKind kind;
  int line = 1, col = 1;
  std::string name;
  Value literal;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;  // Compare
  bool negated = false;          // Test
};

struct Stmt;
using StmtPtr = std::shared_ptr<const Stmt>;
using Body = std::vector<StmtPtr>;

enum class StmtKind {
  Text,        // text
  Output,      // {{ expr }}
  If,          // if expr: body else else_body (elif is a nested If in else_body)
  For,         // for targets in expr [if filter]: body else else_body
  Set,         // set targets = expr, or set targets[0].attr = expr when attr is non-empty
  SetBlock,    // set targets[0] %} body {% endset
  Macro,       // macro name(params) body
  CallBlock,   // call(params) expr %} body {% endcall: body is the caller()
  FilterBlock, // filter name(args) %} body {% endfilter: expr is the filter applied to a placeholder
  Break,
  Continue,
};

struct Param {
  std::string name;
  ExprPtr default_value;  // null when required
};

struct Stmt {
  StmtKind kind;
  int line = 1, col = 1;
  std::string text;                  // Text: the data; Macro: its name; Set: attribute name (ns.attr)
  ExprPtr expr;                      // Output/If/For/Set value; CallBlock: the call; FilterBlock: the filter
  ExprPtr filter;                    // For: the `if` condition of the loop
  std::vector<std::string> targets;  // For/Set/SetBlock: names bound
  std::vector<Param> params;         // Macro/CallBlock
  Body body, else_body;
};

// Parses a whole template. Throws reglage::Error "<name>:LINE:COL: ..." on a syntax error, an unclosed
// block, an unknown tag or one this renderer does not support (extends, include, import, block, ...).
Body jinja_parse(const std::vector<Token>& tokens, const std::string& name);

}  // namespace reglage::chat
