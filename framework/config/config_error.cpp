// ConfigError: every problem as "config error: file:line:col: key: message", one per line.
#include "framework/config/config_error.h"

#include <sstream>

namespace reglage::config {

namespace {

// A value problem's message starts with "= " ("= -0.1 (must be > 0)") and reads "key = value (...)";
// others read "key: message". Line 0 (an override, an unreadable file) prints no line:col.
std::string format_problems(const std::string& file, const std::vector<ConfigProblem>& problems) {
  std::ostringstream out;
  for (size_t i = 0; i < problems.size(); ++i) {
    const ConfigProblem& p = problems[i];
    if (i > 0) out << "\n";
    out << "config error: " << file;
    if (p.line > 0) out << ":" << p.line << ":" << p.column;
    out << ": ";
    if (!p.key.empty()) out << p.key << (p.message.rfind("= ", 0) == 0 ? " " : ": ");
    out << p.message;
  }
  return out.str();
}

}  // namespace

ConfigError::ConfigError(const std::string& file, std::vector<ConfigProblem> problems)
    : Error(format_problems(file, problems)), problems_(std::move(problems)) {}

}  // namespace reglage::config
