#include <algorithm>
#include <cstdlib>

#include "framework/core/error.h"
#include "launch/commands.h"

namespace reglage::launch {

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

Args::Args(int argc, char** argv, std::string command) : command_(std::move(command)) {
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || a.size() == 2)
      fail("unexpected argument '", a, "' (options are written --name value)");
    std::string name = a.substr(2), value;
    const auto eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      values_[name] = value;
    } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
      values_[name] = argv[++i];
    } else {
      values_[name] = "";
      bare_.insert(name);
    }
  }
}

std::string Args::str(const std::string& name, const std::string& fallback) {
  known_.insert(name);
  auto it = values_.find(name);
  if (it == values_.end()) return fallback;
  if (bare_.count(name)) fail("--", name, " needs a value");
  return it->second;
}

std::string Args::required(const std::string& name) {
  known_.insert(name);
  if (!values_.count(name)) fail("missing required option --", name);
  return str(name);
}

long long Args::integer(const std::string& name, long long fallback) {
  if (!has(name)) {
    known_.insert(name);
    return fallback;
  }
  const std::string v = str(name);
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno) fail("--", name, " = '", v, "' (expected an integer)");
  return x;
}

double Args::number(const std::string& name, double fallback) {
  if (!has(name)) {
    known_.insert(name);
    return fallback;
  }
  const std::string v = str(name);
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0') fail("--", name, " = '", v, "' (expected a number)");
  return x;
}

bool Args::flag(const std::string& name) {
  known_.insert(name);
  if (!values_.count(name)) return false;
  if (!bare_.count(name)) fail("--", name, " takes no value (got '", values_.at(name), "')");
  return true;
}

void Args::finish() const {
  for (const auto& [name, value] : values_) {
    if (known_.count(name)) continue;
    std::string best;
    size_t best_d = 4;
    for (const auto& k : known_) {
      const size_t d = edit_distance(name, k);
      if (d < best_d) best_d = d, best = k;
    }
    fail("unknown option --", name, " for '", command_, "'", best.empty() ? "" : " (did you mean --" + best + "?)");
  }
}

}  // namespace reglage::launch
