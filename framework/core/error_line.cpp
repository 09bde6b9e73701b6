#include "framework/core/error_line.h"

#include <c10/util/Exception.h>

#include <new>

#include "framework/core/error.h"

namespace reglage::core {

namespace {

std::string first_line(const std::string& text) {
  const size_t end = text.find('\n');
  std::string line = end == std::string::npos ? text : text.substr(0, end);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

}  // namespace

std::string error_line(const std::exception& e) {
  std::string line;
  if (dynamic_cast<const Error*>(&e) != nullptr) {
    line = e.what();  // reglage errors are written as one line already (config errors: one per problem)
    return line.empty() ? "error without a message" : line;
  }
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) {
    // what() appends "Exception raised from ... (most recent call first):" and 20-odd frames.
    line = first_line(c10->what_without_backtrace());
  } else if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) {
    return "out of memory: an allocation failed (std::bad_alloc); the model, batch_size x max_seq_len x "
           "vocabulary or the data set is larger than this machine's memory";
  } else {
    line = first_line(e.what());
  }
  return line.empty() ? "internal error without a message" : line;
}

std::string current_error_line() {
  try {
    throw;
  } catch (const std::exception& e) {
    return error_line(e);
  } catch (...) {
    return "internal error: an exception of unknown type";
  }
}

}  // namespace reglage::core
