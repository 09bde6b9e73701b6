// Loading a pipeline YAML: parse, apply the command line's overrides to the tree, convert into the typed
// structs, validate. Every problem is collected (with its file position) and thrown together.
#include "framework/config/pipeline_config.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "framework/config/config_error.h"
#include "framework/config/stage_types.h"

namespace reglage::config {

namespace {

// The keys of each section, spelled like the struct fields.
const std::vector<std::string> kTopKeys = {"run_dir", "seed", "threads", "model", "lora", "stages"};
const std::vector<std::string> kModelKeys = {"path", "tokenizer", "dtype"};
const std::vector<std::string> kLoraKeys = {"rank", "alpha", "dropout", "targets"};
const std::vector<std::string> kStageKeys = {
    "name",         "type",         "data",         "eval_data",     "train",        "freeze_layers",
    "max_steps",    "epochs",       "batch_size",   "grad_accum",    "lr",           "weight_decay",
    "adam_beta1",   "adam_beta2",   "adam_eps",     "warmup_steps",  "schedule",     "min_lr_ratio",
    "max_grad_norm", "checkpoint_every", "keep_checkpoints", "eval_every", "log_every", "init_from",
    "chat_template", "max_seq_len", "truncate",     "skip_bad_rows"};
const std::vector<std::string> kLoraTargets = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                               "gate_proj", "up_proj", "down_proj", "all-linear"};

bool contains(const std::vector<std::string>& list, const std::string& s) {
  return std::find(list.begin(), list.end(), s) != list.end();
}

std::string join(const std::vector<std::string>& list, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < list.size(); ++i) out += (i ? sep : "") + list[i];
  return out;
}

// "a, b or c"
std::string one_of(const std::vector<std::string>& list) {
  if (list.size() <= 1) return join(list, "");
  return join(std::vector<std::string>(list.begin(), list.end() - 1), ", ") + " or " + list.back();
}

size_t edit_distance(const std::string& a, const std::string& b) {
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
std::string unknown_key_message(const std::string& key, const std::vector<std::string>& valid) {
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

bool parse_int(const std::string& s, int64_t& v) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  errno = 0;
  char* end = nullptr;
  v = std::strtoll(s.c_str(), &end, 10);
  return *end == '\0' && errno == 0;
}

bool parse_uint(const std::string& s, uint64_t& v) {
  if (s.empty() || !std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  errno = 0;
  char* end = nullptr;
  v = std::strtoull(s.c_str(), &end, 10);
  return *end == '\0' && errno == 0;
}

bool parse_double(const std::string& s, double& v) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return *end == '\0';
}

bool path_exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

std::string child_key(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// map[name] without creating it; an undefined node when `map` is not a mapping or lacks the key.
YAML::Node lookup(const YAML::Node& map, const std::string& name) {
  if (!map.IsDefined() || !map.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  return map[name];
}

// What a non-scalar node is, for "= a list (expected a number)".
std::string describe(const YAML::Node& node) {
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  if (node.IsNull()) return "nothing";
  return "'" + node.Scalar() + "'";
}

// Converts one YAML tree into a PipelineConfig, collecting problems. Keys are written "stages[0].lr".
class Loader {
 public:
  std::vector<ConfigProblem> problems;

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

  // Applies "a.b.c=value" to the tree. A list element is addressed by index or by its `name`.
  void apply_override(YAML::Node& root, const std::string& text) {
    const size_t eq = text.find('=');
    if (eq == std::string::npos || eq == 0) {
      add_override_problem("", text, "expected path=value, e.g. stages.sft.lr=1e-4");
      return;
    }
    const std::string path = text.substr(0, eq);
    YAML::Node value;
    try {
      value = YAML::Load(text.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      add_override_problem(path, text, "the value is not valid YAML (" + e.msg + ")");
      return;
    }
    std::vector<std::string> parts;
    for (size_t start = 0;;) {
      const size_t dot = path.find('.', start);
      parts.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    if (std::find(parts.begin(), parts.end(), "") != parts.end()) {
      add_override_problem(path, text, "empty component in the path");
      return;
    }
    YAML::Node cur;
    cur.reset(root);  // reset() rebinds; operator= would overwrite the node it refers to
    std::string key;
    for (size_t i = 0; i < parts.size(); ++i) {
      const std::string& part = parts[i];
      const bool last = i + 1 == parts.size();
      const YAML::Node& ccur = cur;  // const lookups never insert
      YAML::Node next;
      if (cur.IsSequence()) {
        size_t index = cur.size();
        int64_t n = -1;
        if (parse_int(part, n) && n >= 0) {
          if (size_t(n) >= cur.size()) {
            add_override_problem(path, text, "index " + part + " is out of range ('" + key + "' has " +
                                                 std::to_string(cur.size()) + " entries)");
            return;
          }
          index = size_t(n);
        } else {
          std::vector<std::string> names;
          for (size_t j = 0; j < cur.size(); ++j) {
            const YAML::Node name = lookup(ccur[j], "name");
            if (name.IsDefined() && name.IsScalar()) {
              names.push_back(name.Scalar());
              if (name.Scalar() == part && index == cur.size()) index = j;
            }
          }
          if (index == cur.size()) {
            add_override_problem(path, text, "no entry named '" + part + "' in '" + key + "' (names: " +
                                                 (names.empty() ? "none" : join(names, ", ")) + ")");
            return;
          }
        }
        key += "[" + std::to_string(index) + "]";
        if (last) {
          cur[index] = value;
          break;
        }
        next.reset(ccur[index]);
      } else if (cur.IsMap()) {
        key = child_key(key, part);
        if (last) {
          cur[part] = value;
          break;
        }
        const YAML::Node found = ccur[part];  // may be invalid (absent): reset() would throw on it
        if (found.IsDefined() && !found.IsNull()) {
          next.reset(found);
        } else {
          if (part == "stages") {  // stages are named in the file, never made up by an override
            add_override_problem(path, text, "the file has no stages");
            return;
          }
          cur[part] = YAML::Node(YAML::NodeType::Map);  // e.g. lora.rank=4 without a lora section
          next.reset(ccur[part]);
        }
      } else {
        add_override_problem(path, text, "'" + key + "' is a value, not a section");
        return;
      }
      cur.reset(next);
    }
    overrides_.emplace_back(key, text);
  }

  PipelineConfig convert(const YAML::Node& root, int world_size) {
    PipelineConfig c;
    section_marks_[""] = root.Mark();
    check_keys(root, "", kTopKeys);
    if (!read_string(root, "", "run_dir", c.run_dir) || c.run_dir.empty())
      if (!bad_.count("run_dir")) add("run_dir", root.Mark(), "required (the directory for this run's outputs)");
    read_seed(root, c.seed);
    read_int(root, "", "threads", c.threads);

    const YAML::Node model = lookup(root, "model");
    if (check_section(model, "model", kModelKeys)) {
      if (!read_string(model, "model", "path", c.model.path) || c.model.path.empty())
        if (!bad_.count("model.path")) add("model.path", mark_of("model.path"), "required (the model file or directory)");
      read_string(model, "model", "tokenizer", c.model.tokenizer);
      read_string(model, "model", "dtype", c.model.dtype);
    } else if (!model.IsDefined() || model.IsNull()) {
      add("model", root.Mark(), "required (a mapping with path, and optionally tokenizer and dtype)");
    }

    const YAML::Node lora = lookup(root, "lora");
    if (check_section(lora, "lora", kLoraKeys)) {
      read_int(lora, "lora", "rank", c.lora.rank);
      read_double(lora, "lora", "alpha", c.lora.alpha);
      read_double(lora, "lora", "dropout", c.lora.dropout);
      read_targets(lora, c.lora.targets);
    }

    const YAML::Node stages = lookup(root, "stages");
    if (stages.IsDefined() && !stages.IsNull() && !stages.IsSequence()) {
      add("stages", stages.Mark(), "= " + describe(stages) + " (expected a list of stages)");
    } else if (!stages.IsDefined() || stages.IsNull() || stages.size() == 0) {
      add("stages", stages.IsDefined() ? stages.Mark() : root.Mark(), "at least one stage is required");
    } else {
      for (size_t i = 0; i < stages.size(); ++i) {
        const std::string prefix = "stages[" + std::to_string(i) + "]";
        c.stages.push_back(read_stage(stages[i], prefix));
      }
    }
    validate(c, world_size);
    return c;
  }

 private:
  std::vector<std::pair<std::string, std::string>> overrides_;  // resolved key -> override text
  std::map<std::string, YAML::Mark> marks_;          // key -> where its value is written
  std::map<std::string, YAML::Mark> section_marks_;  // section key -> where it starts
  std::map<std::string, std::string> texts_;         // key -> the value as written
  std::set<std::string> bad_;                        // keys with a type problem: no range checks
  std::set<std::string> stage_bad_;                  // stages that are not mappings

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

  void read_seed(const YAML::Node& root, uint64_t& out) {
    std::string text;
    if (!read_scalar(root, "", "seed", "an integer >= 0", text)) return;
    uint64_t v = 0;
    int64_t negative = 0;
    if (parse_uint(text, v)) {
      out = v;
    } else if (parse_int(text, negative) && negative < 0) {
      bad_.insert("seed");
      add("seed", mark_of("seed"), "= " + text + " (must be >= 0)");
    } else {
      type_problem("seed", text, "an integer >= 0");
    }
  }

  void read_targets(const YAML::Node& lora, std::vector<std::string>& out) {
    const YAML::Node node = lookup(lora, "targets");
    if (!node.IsDefined()) return;
    if (!node.IsSequence()) {
      bad_.insert("lora.targets");
      add("lora.targets", node.Mark(), "= " + describe(node) + " (expected a list, e.g. [q_proj, v_proj])");
      return;
    }
    std::vector<std::string> targets;
    for (size_t i = 0; i < node.size(); ++i) {
      const std::string key = "lora.targets[" + std::to_string(i) + "]";
      const YAML::Node t = node[i];
      if (!t.IsScalar()) {
        add(key, t.Mark(), "= " + describe(t) + " (expected a layer name)");
      } else if (!contains(kLoraTargets, t.Scalar())) {
        add(key, t.Mark(), "= " + t.Scalar() + " (expected " + one_of(kLoraTargets) + ")");
      } else {
        targets.push_back(t.Scalar());
      }
    }
    if (node.size() == 0) {
      add("lora.targets", node.Mark(), "= [] (name at least one layer)");
    } else if (contains(targets, "all-linear") && node.size() > 1) {
      add("lora.targets", node.Mark(), "all-linear already names every layer; list it alone");
    }
    out = targets;
  }

  StageConfig read_stage(const YAML::Node& node, const std::string& p) {
    StageConfig s;
    if (!node.IsMap()) {
      add(p, node.Mark(), "= " + describe(node) + " (expected a mapping with name, type, data, ...)");
      stage_bad_.insert(p);
      return s;
    }
    section_marks_[p] = node.Mark();
    check_keys(node, p, kStageKeys);
    read_string(node, p, "name", s.name);
    read_string(node, p, "type", s.type);
    read_string(node, p, "data", s.data);
    read_string(node, p, "eval_data", s.eval_data);
    read_string(node, p, "train", s.train);
    read_int(node, p, "freeze_layers", s.freeze_layers);
    read_int(node, p, "max_steps", s.max_steps);
    read_int(node, p, "epochs", s.epochs);
    read_int(node, p, "batch_size", s.batch_size);
    read_int(node, p, "grad_accum", s.grad_accum);
    read_double(node, p, "lr", s.lr);
    read_double(node, p, "weight_decay", s.weight_decay);
    read_double(node, p, "adam_beta1", s.adam_beta1);
    read_double(node, p, "adam_beta2", s.adam_beta2);
    read_double(node, p, "adam_eps", s.adam_eps);
    read_int(node, p, "warmup_steps", s.warmup_steps);
    read_string(node, p, "schedule", s.schedule);
    read_double(node, p, "min_lr_ratio", s.min_lr_ratio);
    read_double(node, p, "max_grad_norm", s.max_grad_norm);
    read_int(node, p, "checkpoint_every", s.checkpoint_every);
    read_int(node, p, "keep_checkpoints", s.keep_checkpoints);
    read_int(node, p, "eval_every", s.eval_every);
    read_int(node, p, "log_every", s.log_every);
    read_string(node, p, "init_from", s.init_from);
    read_string(node, p, "chat_template", s.chat_template);
    read_int(node, p, "max_seq_len", s.max_seq_len);
    read_bool(node, p, "truncate", s.truncate);
    read_bool(node, p, "skip_bad_rows", s.skip_bad_rows);
    return s;
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

  void check_exists(const std::string& key, const std::string& path) {
    check(key, path.empty() || path_exists(path), path, "no such file or directory");
  }

  void check_choice(const std::string& key, const std::string& value, const std::vector<std::string>& choices) {
    check(key, contains(choices, value), value, "expected " + one_of(choices));
  }

  void validate(const PipelineConfig& c, int world_size) {
    check("threads", c.threads >= 0, c.threads, "must be >= 0");
    check_exists("model.path", c.model.path);
    check_exists("model.tokenizer", c.model.tokenizer);
    check_choice("model.dtype", c.model.dtype, {"float32", "bfloat16"});
    check("lora.rank", c.lora.rank > 0, c.lora.rank, "must be > 0");
    check("lora.alpha", c.lora.alpha > 0, c.lora.alpha, "must be > 0");
    check("lora.dropout", c.lora.dropout >= 0 && c.lora.dropout < 1, c.lora.dropout, "must be in [0, 1)");

    std::map<std::string, size_t> first_index;  // stage name -> the first stage with it
    for (size_t i = 0; i < c.stages.size(); ++i) first_index.emplace(c.stages[i].name, i);
    std::vector<std::string> names;
    for (const StageConfig& s : c.stages) names.push_back(s.name);
    for (size_t i = 0; i < c.stages.size(); ++i) {
      const std::string p = "stages[" + std::to_string(i) + "]";
      if (!stage_bad_.count(p)) validate_stage(c.stages[i], i, p, first_index, names, world_size);
    }
    if (!c.run_dir.empty() && !bad_.count("run_dir")) check_run_dir(c.run_dir);
  }

  void validate_stage(const StageConfig& s, size_t index, const std::string& p,
                      const std::map<std::string, size_t>& first_index, const std::vector<std::string>& names,
                      int world_size) {
    auto k = [&](const char* field) { return p + "." + field; };
    if (s.name.empty()) {
      if (!bad_.count(k("name"))) add(k("name"), mark_of(k("name")), "required (a unique name for the stage)");
    } else {
      const bool valid = std::all_of(s.name.begin(), s.name.end(), [](char ch) {
        return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-';
      });
      check(k("name"), valid, s.name, "only letters, digits, '_' and '-'");
      const size_t first = first_index.at(s.name);
      check(k("name"), first == index, s.name, "repeated stage name; stages[" + std::to_string(first) + "] has it too");
    }
    if (s.type.empty()) {
      if (!bad_.count(k("type"))) add(k("type"), mark_of(k("type")), "required (" + one_of(known_stage_types()) + ")");
    } else {
      check(k("type"), contains(known_stage_types(), s.type), s.type,
            "unknown stage type; expected " + one_of(known_stage_types()));
    }
    if (s.data.empty()) {
      if (!bad_.count(k("data"))) add(k("data"), mark_of(k("data")), "required (the training JSONL)");
    } else {
      check_exists(k("data"), s.data);
    }
    check_exists(k("eval_data"), s.eval_data);
    check_choice(k("train"), s.train, {"lora", "full", "full_freeze_lower"});
    check(k("freeze_layers"), s.freeze_layers >= 0, s.freeze_layers, "must be >= 0");
    check(k("freeze_layers"), s.freeze_layers <= 0 || s.train == "full_freeze_lower", s.freeze_layers,
          "only with train: full_freeze_lower");
    check(k("max_steps"), s.max_steps >= 0, s.max_steps, "must be >= 0");
    check(k("epochs"), s.epochs >= 0, s.epochs, "must be >= 0");
    if (s.max_steps >= 0 && s.epochs >= 0 && !bad_.count(k("max_steps")) && !bad_.count(k("epochs"))) {
      if (s.max_steps > 0 && s.epochs > 0)
        check(k("epochs"), false, s.epochs, "set only one of max_steps and epochs; max_steps is " +
                                                 std::to_string(s.max_steps));
      if (s.max_steps == 0 && s.epochs == 0)
        add(k("max_steps"), mark_of(k("max_steps")), "required: exactly one of max_steps and epochs must be > 0");
    }
    check(k("batch_size"), s.batch_size > 0, s.batch_size, "must be > 0");
    check(k("grad_accum"), s.grad_accum > 0, s.grad_accum, "must be > 0");
    if (s.batch_size > 0 && s.grad_accum > 0 && world_size > 0 && !bad_.count(k("grad_accum"))) {
      const int64_t per_step = int64_t(world_size) * s.grad_accum;
      check(k("batch_size"), s.batch_size % per_step == 0, s.batch_size,
            "must be divisible by world size " + std::to_string(world_size) + " x grad_accum " +
                std::to_string(s.grad_accum) + " = " + std::to_string(per_step));
    }
    check(k("lr"), s.lr > 0, s.lr, "must be > 0");
    check(k("weight_decay"), s.weight_decay >= 0, s.weight_decay, "must be >= 0");
    check(k("adam_beta1"), s.adam_beta1 >= 0 && s.adam_beta1 < 1, s.adam_beta1, "must be in [0, 1)");
    check(k("adam_beta2"), s.adam_beta2 >= 0 && s.adam_beta2 < 1, s.adam_beta2, "must be in [0, 1)");
    check(k("adam_eps"), s.adam_eps > 0, s.adam_eps, "must be > 0");
    check(k("warmup_steps"), s.warmup_steps >= 0, s.warmup_steps, "must be >= 0");
    check_choice(k("schedule"), s.schedule, {"cosine", "linear", "constant"});
    check(k("min_lr_ratio"), s.min_lr_ratio >= 0 && s.min_lr_ratio <= 1, s.min_lr_ratio, "must be in [0, 1]");
    check(k("max_grad_norm"), s.max_grad_norm >= 0, s.max_grad_norm, "must be >= 0; 0 = off");
    check(k("checkpoint_every"), s.checkpoint_every >= 0, s.checkpoint_every, "must be >= 0");
    check(k("keep_checkpoints"), s.keep_checkpoints >= 1, s.keep_checkpoints, "must be >= 1");
    check(k("eval_every"), s.eval_every >= 0, s.eval_every, "must be >= 0");
    check(k("log_every"), s.log_every >= 1, s.log_every, "must be >= 1");
    if (!s.init_from.empty()) {
      auto it = first_index.find(s.init_from);
      if (it == first_index.end()) {
        check(k("init_from"), false, s.init_from, "no stage has this name; stages: " + join(names, ", "));
      } else if (it->second == index) {
        check(k("init_from"), false, s.init_from, "a stage cannot start from itself");
      } else {
        check(k("init_from"), it->second < index, s.init_from,
              "stage '" + s.init_from + "' comes later (stages[" + std::to_string(it->second) +
                  "]); init_from must name an earlier stage");
      }
    }
    check_choice(k("chat_template"), s.chat_template, {"plain", "chatml", "llama2"});
    check(k("max_seq_len"), s.max_seq_len >= 0, s.max_seq_len, "must be >= 0; 0 = the model's context");
  }

  // Creates run_dir and proves it writable with a probe file that is removed again.
  void check_run_dir(const std::string& run_dir) {
    std::error_code ec;
    std::filesystem::create_directories(run_dir, ec);
    if (ec) {
      check("run_dir", false, run_dir, "cannot create it: " + ec.message());
      return;
    }
    if (!std::filesystem::is_directory(run_dir, ec)) {
      check("run_dir", false, run_dir, "not a directory");
      return;
    }
    const std::string probe = run_dir + "/.reglage_write_probe." + std::to_string(::getpid());
    std::ofstream out(probe);
    if (!out) {
      check("run_dir", false, run_dir, std::string("not writable: ") + std::strerror(errno));
      return;
    }
    out.close();
    std::filesystem::remove(probe, ec);
  }
};

}  // namespace

PipelineConfig load_pipeline(const std::string& path, const std::vector<std::string>& overrides, int world_size) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw ConfigError(path, {ConfigProblem{0, 0, "", std::string("cannot open the file: ") + std::strerror(errno)}});
  } catch (const YAML::ParserException& e) {
    ConfigProblem p{e.mark.line + 1, e.mark.column + 1, "", "YAML syntax error: " + e.msg};
    throw ConfigError(path, {p});
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);  // an empty file: report what is missing
  if (!root.IsMap()) {
    const YAML::Mark m = root.Mark();
    throw ConfigError(path, {ConfigProblem{m.line + 1, m.column + 1, "",
                                           "expected a mapping with run_dir, model, lora and stages"}});
  }

  Loader loader;
  for (const std::string& o : overrides) loader.apply_override(root, o);
  PipelineConfig config = loader.convert(root, world_size);
  config.source = path;
  if (!loader.problems.empty()) {
    // In file order; problems without a place (overrides) last.
    std::stable_sort(loader.problems.begin(), loader.problems.end(), [](const ConfigProblem& a, const ConfigProblem& b) {
      const auto rank = [](const ConfigProblem& p) { return p.line == 0 ? std::pair(INT32_MAX, 0) : std::pair(p.line, p.column); };
      return rank(a) < rank(b);
    });
    throw ConfigError(path, std::move(loader.problems));
  }
  return config;
}

}  // namespace reglage::config
