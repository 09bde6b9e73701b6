// Errors: library code throws reglage::Error with one line that says what, where and what was expected;
// main() catches it, prints it with the rank, and exits non-zero.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace reglage {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
inline void append_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void append_all(std::ostringstream& out, const T& first, const Rest&... rest) {
  out << first;
  append_all(out, rest...);
}
}  // namespace detail

// Builds a message from pieces: fail("model file ", path, ": truncated at byte ", n)
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream out;
  detail::append_all(out, parts...);
  throw Error(out.str());
}

}  // namespace reglage
