// The builtins every template sees (range, dict, namespace) and the check of filter and test names that
// jinja2 makes when it compiles a template.
#include "framework/chat/jinja_eval.h"
#include "framework/core/error.h"

namespace reglage::chat {

Value builtin_range(const CallArgs& args) {
  std::vector<int64_t> bounds;
  for (const auto& a : args.positional) {
    if (a.kind != Kind::Int && a.kind != Kind::Bool) jinja_raise("range() takes integers, got " + a.type_name());
    bounds.push_back(a.kind == Kind::Bool ? a.b : a.i);
  }
  if (bounds.empty() || bounds.size() > 3) jinja_raise("range() takes 1 to 3 integer arguments");
  int64_t start = bounds.size() > 1 ? bounds[0] : 0, stop = bounds.size() > 1 ? bounds[1] : bounds[0];
  int64_t step = bounds.size() > 2 ? bounds[2] : 1;
  if (step == 0) jinja_raise("range() arg 3 must not be zero");
  int64_t count = step > 0 ? (stop > start ? (stop - start + step - 1) / step : 0)
                           : (start > stop ? (start - stop - step - 1) / -step : 0);
  constexpr int64_t kMaxRange = 100000;  // jinja2's sandbox refuses the same
  if (count > kMaxRange)
    jinja_raise("range too big: " + std::to_string(count) + " items; the sandbox allows at most " +
                std::to_string(kMaxRange));
  ValueList items;
  for (int64_t k = 0; k < count; ++k) items.push_back(Value::integer(start + k * step));
  return Value::make_list(std::move(items));
}

// dict(a=1) and namespace(a=1) (also namespace(some_dict)).
ValueDict keyword_dict(const CallArgs& args, const char* what) {
  ValueDict items;
  for (const auto& a : args.positional) {
    if (!a.is_mapping()) jinja_raise(std::string(what) + "() takes a dict or keyword arguments, got " + a.type_name());
    items.insert(items.end(), a.dict->begin(), a.dict->end());
  }
  for (const auto& [key, val] : args.keyword) items.emplace_back(Value::string(key), val);
  return items;
}

namespace {

// Walks the AST for filter and test names.
void check_expr(const Expr* e, const std::string& name) {
  if (!e) return;
  if (e->kind == ExprKind::Filter && !is_known_filter(e->name))
    fail(name, ":", e->line, ":", e->col, ": unknown filter '", e->name, "'");
  if (e->kind == ExprKind::Test && !is_known_test(e->name))
    fail(name, ":", e->line, ":", e->col, ": unknown test '", e->name, "'");
  for (const auto& a : e->args) check_expr(a.get(), name);
  for (const auto& kv : e->kwargs) check_expr(kv.second.get(), name);
}

void check_body(const Body& body, const std::string& name) {
  for (const auto& s : body) {
    check_expr(s->expr.get(), name);
    check_expr(s->filter.get(), name);
    for (const auto& p : s->params) check_expr(p.default_value.get(), name);
    check_body(s->body, name);
    check_body(s->else_body, name);
  }
}

}  // namespace

void jinja_check_names(const Body& body, const std::string& name) { check_body(body, name); }

}  // namespace reglage::chat
