// Jinja interpreter: statements write into one output string; expressions evaluate to Values. A JinjaError
// raised below an expression is turned into a reglage::Error carrying that expression's line:column.
#include "framework/chat/jinja_eval.h"

#include <cmath>

#include "framework/chat/jinja_ops.h"
#include "framework/core/error.h"

namespace reglage::chat {

void jinja_raise(const std::string& message) { throw JinjaError(message); }

void raise_undefined(const Value& undefined) {
  jinja_raise(undefined.s.empty() ? "a value is undefined" : undefined.s);
}

namespace {

// A scope: for-loop iterations, macro calls and captured blocks get a child; lookups walk to the root.
struct Frame {
  std::vector<std::pair<std::string, Value>> vars;
  std::shared_ptr<Frame> parent;

  const Value* lookup(const std::string& name) const {
    for (const Frame* f = this; f; f = f->parent.get())
      for (auto it = f->vars.rbegin(); it != f->vars.rend(); ++it)
        if (it->first == name) return &it->second;
    return nullptr;
  }
  void assign(const std::string& name, Value v) {
    for (auto& [key, value] : vars)
      if (key == name) { value = std::move(v); return; }
    vars.emplace_back(name, std::move(v));
  }
};
using FramePtr = std::shared_ptr<Frame>;

enum class Flow { Normal, Break, Continue };

class Interpreter {
 public:
  Interpreter(const std::string& name, const RenderLimits& limits) : name_(name), limits_(limits) {}

  std::string render(const Body& body, FramePtr root) {
    std::string out;
    exec_body(body, root, out);
    return out;
  }

 private:
  std::string name_;
  RenderLimits limits_;
  int64_t iterations_ = 0;
  int call_depth_ = 0;

  [[noreturn]] void error_at(int line, int col, const std::string& what) const {
    fail(name_, ":", line, ":", col, ": ", what);
  }

  void write(std::string& out, const std::string& text, const Stmt& at) const {
    out += text;
    if (out.size() > limits_.max_output_bytes)
      error_at(at.line, at.col, "the rendering exceeds " + std::to_string(limits_.max_output_bytes) +
                                    " bytes (an endless loop or recursion?)");
  }

  Flow exec_body(const Body& body, const FramePtr& frame, std::string& out) {
    for (const auto& s : body) {
      Flow flow = exec(*s, frame, out);
      if (flow != Flow::Normal) return flow;
    }
    return Flow::Normal;
  }

  Flow exec(const Stmt& s, const FramePtr& frame, std::string& out) {
    switch (s.kind) {
      case StmtKind::Text: write(out, s.text, s); return Flow::Normal;
      case StmtKind::Output: write(out, eval(*s.expr, frame).str(), s); return Flow::Normal;
      case StmtKind::If:
        return exec_body(eval(*s.expr, frame).truthy() ? s.body : s.else_body, frame, out);
      case StmtKind::For: exec_for(s, frame, out); return Flow::Normal;
      case StmtKind::Set: exec_set(s, frame, eval(*s.expr, frame)); return Flow::Normal;
      case StmtKind::SetBlock: {
        auto inner = std::make_shared<Frame>();
        inner->parent = frame;
        std::string captured;
        exec_body(s.body, inner, captured);
        frame->assign(s.targets[0], Value::string(captured));
        return Flow::Normal;
      }
      case StmtKind::Macro: frame->assign(s.text, make_macro(s, frame)); return Flow::Normal;
      case StmtKind::CallBlock: {
        // caller() renders the block's body in the scope where the call block stands.
        Value caller = make_macro(s, frame);
        write(out, eval_call(*s.expr, frame, &caller).str(), s);
        return Flow::Normal;
      }
      case StmtKind::FilterBlock: {
        auto inner = std::make_shared<Frame>();
        inner->parent = frame;
        std::string captured;
        exec_body(s.body, inner, captured);
        write(out, eval_filter(*s.expr, Value::string(captured), frame).str(), s);
        return Flow::Normal;
      }
      case StmtKind::Break: return Flow::Break;
      case StmtKind::Continue: return Flow::Continue;
    }
    return Flow::Normal;
  }

  void bind_targets(const Stmt& s, const FramePtr& frame, const Value& item) {
    if (s.targets.size() == 1) {
      frame->assign(s.targets[0], item);
      return;
    }
    ValueList parts;
    try {
      parts = iterate(item);
    } catch (const JinjaError& e) {
      error_at(s.line, s.col, std::string("cannot unpack: ") + e.what());
    }
    if (parts.size() != s.targets.size())
      error_at(s.line, s.col, "cannot unpack " + std::to_string(parts.size()) + " values into " +
                                  std::to_string(s.targets.size()) + " names");
    for (size_t k = 0; k < parts.size(); ++k) frame->assign(s.targets[k], parts[k]);
  }

  void exec_set(const Stmt& s, const FramePtr& frame, const Value& v) {
    if (s.text.empty()) return bind_targets(s, frame, v);
    const Value* ns = frame->lookup(s.targets[0]);
    if (!ns || ns->kind != Kind::Namespace)
      error_at(s.line, s.col, "cannot assign attribute '" + s.text + "' on '" + s.targets[0] +
                                  "': it is not a namespace() object");
    for (auto& [key, value] : *ns->dict)
      if (key.is_string() && key.s == s.text) { value = v; return; }
    ns->dict->emplace_back(Value::string(s.text), v);
  }

  void exec_for(const Stmt& s, const FramePtr& frame, std::string& out) {
    ValueList items;
    try {
      items = iterate(eval(*s.expr, frame));
    } catch (const JinjaError& e) {
      error_at(s.expr->line, s.expr->col, e.what());
    }
    if (s.filter) {  // `for x in xs if cond`: filtered before the loop, so loop.length counts kept items
      ValueList kept;
      for (const auto& item : items) {
        auto probe = std::make_shared<Frame>();
        probe->parent = frame;
        bind_targets(s, probe, item);
        if (eval(*s.filter, probe).truthy()) kept.push_back(item);
      }
      items.swap(kept);
    }
    if (items.empty()) {
      exec_body(s.else_body, frame, out);
      return;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < n; ++k) {
      if (++iterations_ > limits_.max_loop_iterations)
        error_at(s.line, s.col, "for loops ran more than " + std::to_string(limits_.max_loop_iterations) +
                                    " iterations (an endless loop?)");
      auto iteration = std::make_shared<Frame>();
      iteration->parent = frame;
      ValueDict loop = {
          {Value::string("index0"), Value::integer(k)},
          {Value::string("index"), Value::integer(k + 1)},
          {Value::string("revindex0"), Value::integer(n - k - 1)},
          {Value::string("revindex"), Value::integer(n - k)},
          {Value::string("first"), Value::boolean(k == 0)},
          {Value::string("last"), Value::boolean(k == n - 1)},
          {Value::string("length"), Value::integer(n)},
          {Value::string("depth"), Value::integer(1)},
          {Value::string("depth0"), Value::integer(0)},
          {Value::string("previtem"), k > 0 ? items[k - 1] : Value::undefined("there is no previous item")},
          {Value::string("nextitem"), k + 1 < n ? items[k + 1] : Value::undefined("there is no next item")},
      };
      loop.emplace_back(Value::string("cycle"), Value::callable([k](const CallArgs& args) {
        if (args.positional.empty()) jinja_raise("no items for cycling given");
        return args.positional[static_cast<size_t>(k) % args.positional.size()];
      }));
      iteration->assign("loop", Value::make_dict(std::move(loop)));
      bind_targets(s, iteration, items[k]);
      if (exec_body(s.body, iteration, out) == Flow::Break) break;
    }
  }

  // A macro (or a call block's caller) as a callable that renders its body in a fresh scope whose parent
  // is the scope it was defined in.
  // The scope is held weakly: a macro stored in its own scope must not keep that scope alive forever.
  Value make_macro(const Stmt& s, const FramePtr& frame) {
    const Stmt* stmt = &s;
    std::weak_ptr<Frame> weak_scope = frame;
    return Value::callable([this, stmt, weak_scope](const CallArgs& args) -> Value {
      FramePtr defined_in = weak_scope.lock();
      if (!defined_in) jinja_raise("macro '" + stmt->text + "' is called outside the scope that defined it");
      if (++call_depth_ > limits_.max_call_depth)
        error_at(stmt->line, stmt->col, "macro calls nest deeper than " + std::to_string(limits_.max_call_depth) +
                                            " (endless recursion in '" + stmt->text + "'?)");
      auto scope = std::make_shared<Frame>();
      scope->parent = defined_in;
      if (args.positional.size() > stmt->params.size())
        jinja_raise("macro '" + stmt->text + "' takes not more than " + std::to_string(stmt->params.size()) +
                    " argument(s)");
      for (size_t k = 0; k < stmt->params.size(); ++k) {
        const Param& p = stmt->params[k];
        Value v = Value::undefined("'" + p.name + "' is undefined");
        bool given = false;
        if (k < args.positional.size()) { v = args.positional[k]; given = true; }
        for (const auto& [key, val] : args.keyword)
          if (key == p.name) { v = val; given = true; }
        if (!given && p.default_value) v = eval(*p.default_value, scope);
        scope->assign(p.name, v);
      }
      for (const auto& [key, val] : args.keyword) {
        bool known = key == "caller";
        for (const auto& p : stmt->params) known = known || p.name == key;
        if (!known) jinja_raise("macro '" + stmt->text + "' takes no keyword argument '" + key + "'");
        if (key == "caller") scope->assign("caller", val);
      }
      std::string out;
      exec_body(stmt->body, scope, out);
      --call_depth_;
      return Value::string(out);
    });
  }

  Value eval(const Expr& e, const FramePtr& frame) {
    try {
      return eval_inner(e, frame);
    } catch (const JinjaError& err) {
      error_at(e.line, e.col, err.what());
    }
  }

  Value eval_inner(const Expr& e, const FramePtr& frame) {
    switch (e.kind) {
      case ExprKind::Literal: return e.literal;
      case ExprKind::Name: {
        const Value* v = frame->lookup(e.name);
        return v ? *v : Value::undefined("'" + e.name + "' is undefined");
      }
      case ExprKind::List: case ExprKind::Tuple: {
        ValueList items;
        for (const auto& a : e.args) items.push_back(eval(*a, frame));
        return e.kind == ExprKind::Tuple ? Value::make_tuple(std::move(items)) : Value::make_list(std::move(items));
      }
      case ExprKind::Dict: {
        ValueDict items;
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          Value key = eval(*e.args[k], frame), val = eval(*e.args[k + 1], frame);
          bool replaced = false;
          for (auto& [k2, v2] : items)
            if (values_equal(k2, key)) { v2 = val; replaced = true; }
          if (!replaced) items.emplace_back(key, val);
        }
        return Value::make_dict(std::move(items));
      }
      case ExprKind::GetAttr: return get_attribute(eval(*e.args[0], frame), e.name);
      case ExprKind::GetItem: return get_item(eval(*e.args[0], frame), eval(*e.args[1], frame));
      case ExprKind::Slice: {
        auto part = [&](size_t k) { return e.args[k] ? eval(*e.args[k], frame) : Value::none(); };
        return slice_value(eval(*e.args[0], frame), part(1), part(2), part(3));
      }
      case ExprKind::Call: return eval_call(e, frame, nullptr);
      case ExprKind::Filter: return eval_filter(e, eval(*e.args[0], frame), frame);
      case ExprKind::Test: {
        CallArgs args = eval_args(e, frame);
        bool r = apply_test(e.name, eval(*e.args[0], frame), args);
        return Value::boolean(e.negated ? !r : r);
      }
      case ExprKind::Unary: {
        Value v = eval(*e.args[0], frame);
        if (e.name == "not") return Value::boolean(!v.truthy());
        return unary_op(e.name, v);
      }
      case ExprKind::Binary: {
        if (e.name == "and") {
          Value left = eval(*e.args[0], frame);
          return left.truthy() ? eval(*e.args[1], frame) : left;
        }
        if (e.name == "or") {
          Value left = eval(*e.args[0], frame);
          return left.truthy() ? left : eval(*e.args[1], frame);
        }
        return binary_op(e.name, eval(*e.args[0], frame), eval(*e.args[1], frame));
      }
      case ExprKind::Compare: {
        Value left = eval(*e.args[0], frame);
        for (size_t k = 0; k < e.ops.size(); ++k) {
          Value right = eval(*e.args[k + 1], frame);
          if (!compare_op(e.ops[k], left, right)) return Value::boolean(false);
          left = right;
        }
        return Value::boolean(true);
      }
      case ExprKind::Cond:
        if (eval(*e.args[1], frame).truthy()) return eval(*e.args[0], frame);
        return e.args[2] ? eval(*e.args[2], frame) : Value::undefined("the conditional expression has no else");
    }
    return Value::undefined();
  }

  // Positional args are e.args[1..]; e.args[0] is the subject (callee, filtered value or tested value).
  CallArgs eval_args(const Expr& e, const FramePtr& frame) {
    CallArgs args;
    for (size_t k = 1; k < e.args.size(); ++k) args.positional.push_back(eval(*e.args[k], frame));
    for (const auto& [key, val] : e.kwargs) args.keyword.emplace_back(key, eval(*val, frame));
    return args;
  }

  Value eval_filter(const Expr& e, const Value& input, const FramePtr& frame) {
    CallArgs args = eval_args(e, frame);
    try {
      return apply_filter(e.name, input, args);
    } catch (const JinjaError& err) {
      error_at(e.line, e.col, "filter '" + e.name + "': " + err.what());
    }
  }

  Value eval_call(const Expr& e, const FramePtr& frame, const Value* caller) {
    CallArgs args = eval_args(e, frame);
    if (caller) args.keyword.emplace_back("caller", *caller);
    const Expr& callee = *e.args[0];
    Value fn;
    if (callee.kind == ExprKind::GetAttr) {
      fn = get_attribute(eval(*callee.args[0], frame), callee.name);
    } else {
      fn = eval(callee, frame);
    }
    if (fn.kind == Kind::Undefined) raise_undefined(fn);
    if (fn.kind != Kind::Callable) jinja_raise("'" + fn.type_name() + "' object is not callable");
    try {
      return (*fn.fn)(args);
    } catch (const JinjaError& err) {
      error_at(e.line, e.col, err.what());
    }
  }
};

}  // namespace


std::string jinja_render(const Body& body, const std::vector<std::pair<std::string, Value>>& globals,
                         const std::string& name, const RenderLimits& limits) {
  auto builtins = std::make_shared<Frame>();
  builtins->assign("range", Value::callable(builtin_range));
  builtins->assign("dict", Value::callable([](const CallArgs& a) { return Value::make_dict(keyword_dict(a, "dict")); }));
  builtins->assign("namespace", Value::callable([](const CallArgs& a) {
    return Value::make_namespace(keyword_dict(a, "namespace"));
  }));
  for (const auto& [key, val] : globals) builtins->assign(key, val);
  auto root = std::make_shared<Frame>();  // the template's own top-level variables
  root->parent = builtins;
  Interpreter interpreter(name, limits);
  return interpreter.render(body, root);
}

}  // namespace reglage::chat
