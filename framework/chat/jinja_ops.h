// Python operators on renderer values, as jinja2 evaluates them (it compiles to Python, so `1 / 2` is 0.5,
// `7 // -2` is -4, `'a' * 3` is 'aaa', and `'a' + 1` is a TypeError).
#pragma once
#include <string>

#include "framework/chat/jinja_value.h"

namespace reglage::chat {

Value unary_op(const std::string& op, const Value& v);                       // - +
Value binary_op(const std::string& op, const Value& a, const Value& b);      // + - * / // % ** ~
bool compare_op(const std::string& op, const Value& a, const Value& b);      // == != < <= > >= in, not in

}  // namespace reglage::chat
