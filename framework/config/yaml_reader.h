// The machinery shared by the YAML readers of config/ (pipeline_config.cpp, reward_config.cpp): typed reads
// of scalars with their file positions, unknown-key checks with a suggestion, and problems collected into
// one list. Internal to config/: only config/ includes yaml-cpp.
#pragma once
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "framework/config/choices.h"
#include "framework/config/pipeline_config.h"

namespace reglage::config::detail {

inline bool contains(const std::vector<std::string>& list, const std::string& s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

inline std::string join(const std::vector<std::string>& list, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < list.size(); ++i) out += (i ? sep : "") + list[i];
  return out;
}

// "a, b or c"
inline std::string one_of(const std::vector<std::string>& list) {
  if (list.size() <= 1) return join(list, "");
  return join(std::vector<std::string>(list.begin(), list.end() - 1), ", ") + " or " + list.back();
}

inline size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// "unknown key 'lrr' (did you mean 'lr'?)", or the valid keys when none is close.
inline std::string unknown_key_message(const std::string& key, const std::vector<std::string>& valid) {
  std::string best;
  size_t best_distance = std::string::npos;
  for (const std::string& v : valid) {
    const size_t d = edit_distance(key, v);
    if (d < best_distance) best_distance = d, best = v;
  }
  if (best_distance <= std::max<size_t>(2, key.size() / 3))
    return "unknown key '" + key + "' (did you mean '" + best + "'?)";
  return "unknown key '" + key + "' (valid keys: " + join(valid, ", ") + ")";
}

inline bool parse_int(const std::string& s, int64_t& v) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  errno = 0;
  char* end = nullptr;
  v = std::strtoll(s.c_str(), &end, 10);
  return *end == '\0' && errno == 0;
}

inline bool parse_uint(const std::string& s, uint64_t& v) {
  if (s.empty() || !std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  errno = 0;
  char* end = nullptr;
  v = std::strtoull(s.c_str(), &end, 10);
  return *end == '\0' && errno == 0;
}

inline bool parse_double(const std::string& s, double& v) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return *end == '\0';
}

inline bool path_exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

inline std::string child_key(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// map[name] without creating it; an undefined node when `map` is not a mapping or lacks the key.
inline YAML::Node lookup(const YAML::Node& map, const std::string& name) {
  if (!map.IsDefined() || !map.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  return map[name];
}

// What a non-scalar node is, for "= a list (expected a number)".
inline std::string describe(const YAML::Node& node) {
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  if (node.IsNull()) return "nothing";
  return "'" + node.Scalar() + "'";
}

// Reads typed values out of a YAML tree, collecting problems. Keys are written "stages[0].lr".
class YamlReader {
 public:
  std::vector<ConfigProblem> problems;

  // True when `key` had a type problem (its range checks are skipped).
  bool bad_key(const std::string& key) const { return bad_.count(key) > 0; }

  // A problem on `key` at `mark` (0-based; reported 1-based). A key set by an override has no place in
  // the file: line 0, and the override is named.
  void add(const std::string& key, const YAML::Mark& mark, std::string message) {
    ConfigProblem p;
    p.key = key;
    if (const std::string* text = override_of(key)) {
      message += " (from override '" + *text + "')";
    } else if (mark.line >= 0) {
      p.line = mark.line + 1;
      p.column = mark.column + 1;
    }
    p.message = std::move(message);
    problems.push_back(std::move(p));
  }

  void add_override_problem(const std::string& key, const std::string& text, const std::string& message) {
    ConfigProblem p;
    p.key = key;
    p.message = "override '" + text + "': " + message;
    problems.push_back(std::move(p));
  }

  // The last override that set `key` or a section holding it.
  const std::string* override_of(const std::string& key) const {
    for (auto it = overrides_.rbegin(); it != overrides_.rend(); ++it) {
      const std::string& k = it->first;
      if (key == k || (key.size() > k.size() && key.compare(0, k.size(), k) == 0 &&
                       (key[k.size()] == '.' || key[k.size()] == '[')))
        return &it->second;
    }
    return nullptr;
  }

  // Where `key` is written, or where its section starts when it is absent (a default).
  YAML::Mark mark_of(const std::string& key) const {
    auto it = marks_.find(key);
    if (it != marks_.end()) return it->second;
    std::string section = key;
    while (true) {
      const size_t cut = section.find_last_of(".[");
      section = cut == std::string::npos ? "" : section.substr(0, cut);
      auto s = section_marks_.find(section);
      if (s != section_marks_.end()) return s->second;
      if (section.empty()) return YAML::Mark::null_mark();
    }
  }

  // A section is a mapping (or absent: all defaults). Reports unknown and repeated keys.
  bool check_section(const YAML::Node& node, const std::string& prefix, const std::vector<std::string>& valid) {
    if (!node.IsDefined() || node.IsNull()) return false;
    if (!node.IsMap()) {
      add(prefix, node.Mark(), "= " + describe(node) + " (expected a mapping with " + join(valid, ", ") + ")");
      return false;
    }
    section_marks_[prefix] = node.Mark();
    check_keys(node, prefix, valid);
    return true;
  }

  void check_keys(const YAML::Node& map, const std::string& prefix, const std::vector<std::string>& valid) {
    std::set<std::string> seen;
    for (const auto& kv : map) {
      const std::string name = kv.first.IsScalar() ? kv.first.Scalar() : describe(kv.first);
      const std::string key = child_key(prefix, name);
      if (!contains(valid, name)) {
        add(key, kv.first.Mark(), unknown_key_message(name, valid));
      } else if (!seen.insert(name).second) {
        add(key, kv.first.Mark(), "repeated key (each key may appear once)");
      } else {
        marks_[key] = kv.second.Mark();
      }
    }
  }

  // The scalar text at map[name]; false when absent or (reported) not a scalar.
  bool read_scalar(const YAML::Node& map, const std::string& prefix, const std::string& name, const char* expected,
                   std::string& text) {
    const YAML::Node node = lookup(map, name);
    if (!node.IsDefined()) return false;
    const std::string key = child_key(prefix, name);
    if (!node.IsScalar()) {
      bad_.insert(key);
      add(key, node.Mark(), "= " + describe(node) + " (expected " + expected + ")");
      return false;
    }
    text = node.Scalar();
    texts_[key] = text;
    return true;
  }

  void type_problem(const std::string& key, const std::string& text, const char* expected) {
    bad_.insert(key);
    add(key, mark_of(key), "= " + text + " (expected " + expected + ")");
  }

  bool read_string(const YAML::Node& map, const std::string& prefix, const std::string& name, std::string& out) {
    return read_scalar(map, prefix, name, "a string", out);
  }

  bool read_int(const YAML::Node& map, const std::string& prefix, const std::string& name, int64_t& out) {
    std::string text;
    if (!read_scalar(map, prefix, name, "an integer", text)) return false;
    int64_t v = 0;
    if (!parse_int(text, v)) {
      type_problem(child_key(prefix, name), text, "an integer");
      return false;
    }
    out = v;
    return true;
  }

  bool read_double(const YAML::Node& map, const std::string& prefix, const std::string& name, double& out) {
    std::string text;
    if (!read_scalar(map, prefix, name, "a number", text)) return false;
    double v = 0;
    if (!parse_double(text, v)) {
      type_problem(child_key(prefix, name), text, "a number");
      return false;
    }
    // 1e400 parses as inf and .nan as NaN: both pass "> 0" checks and poison training, so no key takes them.
    if (!std::isfinite(v)) {
      type_problem(child_key(prefix, name), text, "a finite number");
      return false;
    }
    out = v;
    return true;
  }

  bool read_bool(const YAML::Node& map, const std::string& prefix, const std::string& name, bool& out) {
    std::string text;
    if (!read_scalar(map, prefix, name, "true or false", text)) return false;
    bool v = false;
    if (!YAML::convert<bool>::decode(lookup(map, name), v)) {
      type_problem(child_key(prefix, name), text, "true or false");
      return false;
    }
    out = v;
    return true;
  }

  // The scalar at `key` as written; "" when absent (or not a scalar).
  std::string text_of(const std::string& key) const {
    auto it = texts_.find(key);
    return it == texts_.end() ? std::string() : it->second;
  }

  // A choice (choices.h) by its name; "= text (expected a, b or c)" for another name (out untouched).
  template <typename E>
  bool read_choice(const YAML::Node& map, const std::string& prefix, const std::string& name, E& out) {
    std::string text;
    if (!read_string(map, prefix, name, text)) return false;
    if (parse_choice(text, out)) return true;
    check(child_key(prefix, name), false, text, "expected " + choice_list<E>());
    return false;
  }

  // A value problem "key = value (requirement)" unless the value already had a type problem.
  template <typename T>
  void check(const std::string& key, bool ok, const T& value, const std::string& requirement) {
    if (ok || bad_.count(key)) return;
    auto t = texts_.find(key);
    std::string text;
    if (t != texts_.end()) {
      text = t->second;
    } else {
      std::ostringstream out;
      out << value;
      text = out.str();
    }
    add(key, mark_of(key), "= " + text + " (" + requirement + ")");
  }

  // Upper bounds, stated per key; the lower bound keeps its own check (and message). Within these bounds
  // the products the trainers form (batch x seq x vocab, rollouts x samples, ...) fit in int64.
  void check_max(const std::string& key, int64_t value, int64_t max, const std::string& why = "") {
    check(key, value <= max, value, "must be <= " + std::to_string(max) + why);
  }
  void check_max(const std::string& key, double value, double max, const std::string& why = "") {
    std::ostringstream bound;
    bound << max;
    check(key, value <= max, value, "must be <= " + bound.str() + why);
  }

  void check_exists(const std::string& key, const std::string& path) {
    check(key, path.empty() || path_exists(path), path, "no such file or directory");
  }

  void check_choice(const std::string& key, const std::string& value, const std::vector<std::string>& choices) {
    check(key, contains(choices, value), value, "expected " + one_of(choices));
  }

 protected:
  std::vector<std::pair<std::string, std::string>> overrides_;  // resolved key -> override text
  std::map<std::string, YAML::Mark> marks_;          // key -> where its value is written
  std::map<std::string, YAML::Mark> section_marks_;  // section key -> where it starts
  std::map<std::string, std::string> texts_;         // key -> the value as written
  std::set<std::string> bad_;                        // keys with a type problem: no range checks
};

// The parsed file; throws ConfigError (one problem) when it cannot be read or is not valid YAML.
YAML::Node load_yaml_file(const std::string& path);

// Reads a reward section at `key` (reward_config.cpp). top_level: normalize/clip allowed, weight not
// (inside a sum's parts it is the other way round).
void read_reward(YamlReader& r, const YAML::Node& node, const std::string& key, RewardSpec& out, bool top_level);

// Checks that every `stage:` of a model reward (in sum parts too) names a reward_model stage before
// stages[stage_index] of `pipeline`; with no pipeline (a reward file) `stage:` is refused.
void validate_reward_stages(YamlReader& r, const RewardSpec& spec, const std::string& key,
                            const PipelineConfig* pipeline, size_t stage_index);

}  // namespace reglage::config::detail
