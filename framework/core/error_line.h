// One line for any exception that reaches a command's top level: reglage errors as they are, LibTorch's
// c10::Error without its multi-line C++ backtrace, std::bad_alloc as a sentence a user can act on.
#pragma once
#include <exception>
#include <string>

namespace reglage::core {

// The message of `e` on one line (first line only; never empty).
std::string error_line(const std::exception& e);

// For catch (...): the current exception, described like error_line.
std::string current_error_line();

}  // namespace reglage::core
