// Jinja interpreter: renders a parsed template against global variables, with jinja2's default
// (lenient) Undefined, its scoping rules (a for-loop body and a macro get their own scope, if does not) and
// limits that stop a runaway template with a clear error instead of hanging.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "framework/chat/jinja_parser.h"
#include "framework/chat/jinja_value.h"

namespace reglage::chat {

struct RenderLimits {
  int64_t max_loop_iterations = 1000000;  // all for-loop iterations of one rendering together
  size_t max_output_bytes = 64u << 20;    // the rendered text, including captured macro/set output
  int max_call_depth = 100;               // nested macro calls (a recursive macro)
};

// Renders `body`. `globals` are the template's variables and functions (messages, bos_token,
// raise_exception...); the builtins range, namespace and dict are added. Throws reglage::Error
// "<name>:LINE:COL: ..." for a runtime error (an undefined value used where jinja2 errors, a type error,
// raise_exception, a limit reached).
std::string jinja_render(const Body& body, const std::vector<std::pair<std::string, Value>>& globals,
                         const std::string& name, const RenderLimits& limits = {});

// Checks that every filter and test the template names exists (jinja2 refuses unknown filters when it
// compiles, even in branches that never run). Throws reglage::Error with the filter's line:column.
void jinja_check_names(const Body& body, const std::string& name);

// ---- shared by the interpreter, filters and methods (not for callers outside framework/chat) ----

// An error without a position: the interpreter adds the line:column of the expression it was evaluating.
class JinjaError : public std::runtime_error {
 public:
  explicit JinjaError(const std::string& message) : std::runtime_error(message) {}
};
[[noreturn]] void jinja_raise(const std::string& message);

// Raises jinja2's UndefinedError for an Undefined operand ("'x' is undefined").
[[noreturn]] void raise_undefined(const Value& undefined);

bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);
Value apply_filter(const std::string& name, const Value& input, const CallArgs& args);
bool apply_test(const std::string& name, const Value& input, const CallArgs& args);

// jinja2's getattr (x.name): a dict's methods, then its keys; a str's methods; Undefined when missing.
Value get_attribute(const Value& object, const std::string& name);
// jinja2's getitem (x[key]): a dict's keys, a list's or str's indices (negative from the end).
Value get_item(const Value& object, const Value& key);
// Python's iteration: list items, dict keys, str characters; Undefined iterates as empty.
ValueList iterate(const Value& v);
// Python slicing of a list or str; absent bounds are Undefined/None.
Value slice_value(const Value& v, const Value& start, const Value& stop, const Value& step);
// range(stop) / range(start, stop[, step]) as a list, refused above jinja2's sandbox limit of 100000 items.
Value builtin_range(const CallArgs& args);
// The dict built by dict(a=1) and namespace(a=1) (also namespace(some_dict)).
ValueDict keyword_dict(const CallArgs& args, const char* what);
// A keyword argument by name or the positional one at `index`, else `fallback`.
Value arg_or(const CallArgs& args, size_t index, const std::string& name, const Value& fallback);

}  // namespace reglage::chat
