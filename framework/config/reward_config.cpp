// Reading the `reward:` section of a ppo stage (or a reward YAML file of its own) into a RewardSpec, and
// checking it: every problem is collected with its file position, like the rest of the pipeline.
#include "framework/config/reward_config.h"

#include <cmath>
#include <cstring>

#include "framework/config/config_error.h"
#include "framework/config/yaml_reader.h"
#include "framework/core/file_util.h"

namespace reglage::config {

namespace detail {

namespace {

// Upper bounds (the README's table): a reward batch, an http request's patience, a length rule's reach.
constexpr int64_t kMaxRewardBatch = 65536;
constexpr double kMaxTimeoutS = 24 * 3600;
constexpr int64_t kMaxRetries = 100;
constexpr double kMaxBackoffS = 3600;
constexpr int64_t kMaxChars = 1000000000;

const std::vector<std::string> kRewardTypes = choice_names<RewardType>();
const std::vector<std::string> kRuleKinds = {"regex", "not_regex", "contains", "excludes", "exact_reference", "length"};
const std::vector<std::string> kRuleKeys = {"principle", "kind",           "weight",     "pattern",   "words",
                                            "case_sensitive", "whole_word", "min_chars", "max_chars",
                                            "penalty_per_char"};

// The keys a reward of `type` may have; every key of every type when the type is unknown.
std::vector<std::string> reward_keys(const std::string& type, bool top_level) {
  std::vector<std::string> keys = {"type"};
  if (top_level) {
    keys.insert(keys.end(), {"normalize", "clip"});
  } else {
    keys.push_back("weight");
  }
  const bool any = !contains(kRewardTypes, type);
  if (any || type == "model") keys.insert(keys.end(), {"stage", "path", "batch_size"});
  if (any || type == "rules") keys.push_back("rules");
  if (any || type == "http")
    keys.insert(keys.end(), {"url", "timeout_s", "connect_timeout_s", "retries", "backoff_s", "batch_size", "token",
                             "token_env"});
  if (any || type == "sum") keys.push_back("parts");
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

// The rule keys that only some kinds use, and those kinds.
const std::map<std::string, std::vector<std::string>>& kind_only_keys() {
  static const std::map<std::string, std::vector<std::string>> keys = {
      {"pattern", {"regex", "not_regex"}},
      {"words", {"contains", "excludes"}},
      {"case_sensitive", {"contains", "excludes", "exact_reference"}},
      {"whole_word", {"contains", "excludes", "exact_reference"}},
      {"min_chars", {"length"}},
      {"max_chars", {"length"}},
      {"penalty_per_char", {"length"}}};
  return keys;
}

bool read_string_list(YamlReader& r, const YAML::Node& map, const std::string& prefix, const std::string& name,
                      std::vector<std::string>& out) {
  const YAML::Node node = lookup(map, name);
  if (!node.IsDefined()) return false;
  const std::string key = child_key(prefix, name);
  if (!node.IsSequence()) {
    r.add(key, node.Mark(), "= " + describe(node) + " (expected a list of strings)");
    return false;
  }
  for (size_t i = 0; i < node.size(); ++i) {
    if (!node[i].IsScalar()) {
      r.add(key + "[" + std::to_string(i) + "]", node[i].Mark(), "= " + describe(node[i]) + " (expected a string)");
      continue;
    }
    out.push_back(node[i].Scalar());
  }
  return true;
}

RuleConfig read_rule(YamlReader& r, const YAML::Node& node, const std::string& p) {
  RuleConfig rule;
  if (!node.IsMap()) {
    r.add(p, node.Mark(), "= " + describe(node) + " (expected a mapping with kind, weight, ...)");
    return rule;
  }
  r.check_section(node, p, kRuleKeys);
  r.read_string(node, p, "principle", rule.principle);
  r.read_string(node, p, "kind", rule.kind);
  r.read_double(node, p, "weight", rule.weight);
  r.read_string(node, p, "pattern", rule.pattern);
  read_string_list(r, node, p, "words", rule.words);
  r.read_bool(node, p, "case_sensitive", rule.case_sensitive);
  r.read_bool(node, p, "whole_word", rule.whole_word);
  r.read_int(node, p, "min_chars", rule.min_chars);
  r.read_int(node, p, "max_chars", rule.max_chars);
  r.read_double(node, p, "penalty_per_char", rule.penalty_per_char);

  const auto k = [&](const char* f) { return p + "." + f; };
  if (rule.kind.empty()) {
    r.add(k("kind"), r.mark_of(k("kind")), "required (" + one_of(kRuleKinds) + ")");
    return rule;
  }
  r.check_choice(k("kind"), rule.kind, kRuleKinds);
  if (!contains(kRuleKinds, rule.kind)) return rule;
  for (const auto& [key, kinds] : kind_only_keys())
    if (lookup(node, key).IsDefined() && !contains(kinds, rule.kind))
      r.add(k(key.c_str()), r.mark_of(k(key.c_str())),
            "not used by a " + rule.kind + " rule (only by " + one_of(kinds) + ")");
  r.check(k("weight"), std::isfinite(rule.weight), rule.weight, "must be a finite number");
  if (rule.kind == "regex" || rule.kind == "not_regex")
    r.check(k("pattern"), !rule.pattern.empty(), rule.pattern, "required: a non-empty PCRE2 pattern");
  if (rule.kind == "contains" || rule.kind == "excludes") {
    r.check(k("words"), !rule.words.empty(), "[]", "required: at least one word");
    for (size_t i = 0; i < rule.words.size(); ++i)
      r.check(k("words") + "[" + std::to_string(i) + "]", !rule.words[i].empty(), "''", "a word cannot be empty");
  }
  if (rule.kind == "length") {
    r.check(k("min_chars"), rule.min_chars >= 0, rule.min_chars, "must be >= 0; 0 = no bound");
    r.check(k("max_chars"), rule.max_chars >= 0, rule.max_chars, "must be >= 0; 0 = no bound");
    r.check_max(k("min_chars"), rule.min_chars, kMaxChars);
    r.check_max(k("max_chars"), rule.max_chars, kMaxChars);
    if (rule.min_chars == 0 && rule.max_chars == 0)
      r.add(k("max_chars"), r.mark_of(k("max_chars")), "a length rule needs min_chars or max_chars > 0");
    if (rule.min_chars > 0 && rule.max_chars > 0)
      r.check(k("max_chars"), rule.max_chars >= rule.min_chars, rule.max_chars,
              "must be >= min_chars " + std::to_string(rule.min_chars));
    r.check(k("penalty_per_char"), rule.penalty_per_char >= 0 && std::isfinite(rule.penalty_per_char),
            rule.penalty_per_char, "must be >= 0; 0 = pass/fail");
  }
  return rule;
}

}  // namespace

void read_reward(YamlReader& r, const YAML::Node& node, const std::string& p, RewardSpec& out, bool top_level) {
  if (!node.IsMap()) {
    r.add(p, node.Mark(), "= " + describe(node) + " (expected a mapping with type: " + one_of(kRewardTypes) + ")");
    return;
  }
  std::string type;  // as written; an unknown type allows every type's keys
  r.read_string(node, p, "type", type);
  r.check_section(node, p, reward_keys(type, top_level));
  const auto k = [&](const char* f) { return child_key(p, f); };
  if (type.empty()) {
    if (!r.bad_key(k("type"))) r.add(k("type"), node.Mark(), "required (" + one_of(kRewardTypes) + ")");
  } else {
    RewardType t;
    if (parse_choice(type, t)) out.type = t;
    else r.check_choice(k("type"), type, kRewardTypes);
  }
  r.read_double(node, p, "weight", out.weight);
  r.read_bool(node, p, "normalize", out.normalize);
  r.read_double(node, p, "clip", out.clip);
  r.check(k("weight"), std::isfinite(out.weight), out.weight, "must be a finite number");
  r.check(k("clip"), out.clip >= 0 && std::isfinite(out.clip), out.clip, "must be >= 0; 0 = no clipping");

  if (out.type == RewardType::kModel) {
    r.read_string(node, p, "stage", out.stage);
    r.read_string(node, p, "path", out.path);
    r.read_int(node, p, "batch_size", out.batch_size);
    if (out.stage.empty() == out.path.empty() && !r.bad_key(k("stage")) && !r.bad_key(k("path")))
      r.add(k("stage"), node.Mark(),
            "a model reward names exactly one of stage (a reward_model stage) and path (its output directory)");
    r.check_exists(k("path"), out.path);
    r.check(k("batch_size"), out.batch_size > 0, out.batch_size, "must be > 0");
    r.check_max(k("batch_size"), out.batch_size, kMaxRewardBatch);
  } else if (out.type == RewardType::kRules) {
    const YAML::Node rules = lookup(node, "rules");
    if (!rules.IsDefined() || rules.IsNull()) {
      r.add(k("rules"), node.Mark(), "required: a list of checks, e.g. [{kind: contains, words: [Tim]}]");
    } else if (!rules.IsSequence() || rules.size() == 0) {
      r.add(k("rules"), rules.Mark(), "= " + describe(rules) + " (expected a non-empty list of checks)");
    } else {
      for (size_t i = 0; i < rules.size(); ++i)
        out.rules.push_back(read_rule(r, rules[i], k("rules") + "[" + std::to_string(i) + "]"));
    }
  } else if (out.type == RewardType::kHttp) {
    HttpRewardConfig& h = out.http;
    r.read_string(node, p, "url", h.url);
    r.read_double(node, p, "timeout_s", h.timeout_s);
    r.read_double(node, p, "connect_timeout_s", h.connect_timeout_s);
    r.read_int(node, p, "retries", h.retries);
    r.read_double(node, p, "backoff_s", h.backoff_s);
    r.read_int(node, p, "batch_size", h.batch_size);
    r.read_string(node, p, "token", h.token);
    r.read_string(node, p, "token_env", out.token_env);
    if (h.url.empty()) {
      if (!r.bad_key(k("url"))) r.add(k("url"), node.Mark(), "required (http://host:port/path)");
    } else {
      r.check(k("url"), h.url.rfind("http://", 0) == 0 && h.url.size() > 7, h.url,
              "expected http://host[:port]/path (https is not supported)");
    }
    r.check(k("timeout_s"), h.timeout_s > 0, h.timeout_s, "must be > 0");
    r.check(k("connect_timeout_s"), h.connect_timeout_s > 0, h.connect_timeout_s, "must be > 0");
    r.check(k("retries"), h.retries >= 0, h.retries, "must be >= 0");
    r.check(k("backoff_s"), h.backoff_s >= 0, h.backoff_s, "must be >= 0");
    r.check(k("batch_size"), h.batch_size > 0, h.batch_size, "must be > 0");
    r.check_max(k("timeout_s"), h.timeout_s, kMaxTimeoutS);
    r.check_max(k("connect_timeout_s"), h.connect_timeout_s, kMaxTimeoutS);
    r.check_max(k("retries"), h.retries, kMaxRetries);
    r.check_max(k("backoff_s"), h.backoff_s, kMaxBackoffS);
    r.check_max(k("batch_size"), h.batch_size, kMaxRewardBatch);
    if (!h.token.empty() && !out.token_env.empty())
      r.add(k("token_env"), r.mark_of(k("token_env")), "set only one of token and token_env");
  } else if (out.type == RewardType::kSum) {
    const YAML::Node parts = lookup(node, "parts");
    if (!parts.IsDefined() || parts.IsNull()) {
      r.add(k("parts"), node.Mark(), "required: a list of weighted rewards, e.g. [{weight: 1, type: model, stage: rm}]");
    } else if (!parts.IsSequence() || parts.size() == 0) {
      r.add(k("parts"), parts.Mark(), "= " + describe(parts) + " (expected a non-empty list of rewards)");
    } else {
      for (size_t i = 0; i < parts.size(); ++i) {
        RewardSpec part;
        read_reward(r, parts[i], k("parts") + "[" + std::to_string(i) + "]", part, /*top_level=*/false);
        out.parts.push_back(std::move(part));
      }
    }
  }
}

void validate_reward_stages(YamlReader& r, const RewardSpec& spec, const std::string& p, const PipelineConfig* pipeline,
                            size_t stage_index) {
  if (spec.type == RewardType::kSum) {
    for (size_t i = 0; i < spec.parts.size(); ++i)
      validate_reward_stages(r, spec.parts[i], child_key(p, "parts[" + std::to_string(i) + "]"), pipeline, stage_index);
    return;
  }
  if (spec.type != RewardType::kModel || spec.stage.empty()) return;
  const std::string key = child_key(p, "stage");
  if (pipeline == nullptr) {
    r.check(key, false, spec.stage, "a reward file outside a pipeline names its model by path, not stage");
    return;
  }
  size_t found = pipeline->stages.size();
  for (size_t i = 0; i < pipeline->stages.size(); ++i)
    if (pipeline->stages[i].name == spec.stage && found == pipeline->stages.size()) found = i;
  if (found == pipeline->stages.size()) {
    std::vector<std::string> names;
    for (const StageConfig& s : pipeline->stages)
      if (s.type == StageType::kRewardModel) names.push_back(s.name);
    r.check(key, false, spec.stage,
            "no stage has this name; reward_model stages: " + (names.empty() ? std::string("none") : join(names, ", ")));
  } else if (pipeline->stages[found].type != StageType::kRewardModel) {
    r.check(key, false, spec.stage, "stage '" + spec.stage + "' is a " + to_string(pipeline->stages[found].type) +
                                        " stage; a model reward needs a reward_model stage");
  } else {
    r.check(key, found < stage_index, spec.stage, "stage '" + spec.stage + "' must come before this stage");
  }
}

YAML::Node load_yaml_file(const std::string& path) {
  // Read the bytes ourselves: YAML::LoadFile opens a directory and then throws the stream's own
  // "basic_filebuf::underflow" error, without the path.
  std::string text, reason;
  if (!core::try_read_file(path, text, reason))
    throw ConfigError(path, {ConfigProblem{0, 0, "", reason}});
  std::vector<YAML::Node> documents;
  try {
    documents = YAML::LoadAll(text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(path, {ConfigProblem{e.mark.line + 1, e.mark.column + 1, "", "YAML syntax error: " + e.msg}});
  }
  if (documents.empty()) return YAML::Node(YAML::NodeType::Null);
  if (documents.size() > 1) {
    // Everything after a second '---' would be ignored; say where it starts. An empty document has no
    // mark of its own: then the last '---' line is the one.
    int line = documents[1].Mark().line + 1;
    if (line <= 0) {
      int n = 0;
      for (size_t at = 0; at < text.size(); at = text.find('\n', at) + 1) {
        ++n;
        if (text.compare(at, 3, "---") == 0) line = n;
        if (text.find('\n', at) == std::string::npos) break;
      }
    }
    throw ConfigError(path, {ConfigProblem{std::max(line, 1), 1, "",
                                           "a second YAML document (after '---'); the file must hold one document, "
                                           "the rest would be ignored"}});
  }
  return documents[0];
}

}  // namespace detail

RewardSpec load_reward_file(const std::string& path, const PipelineConfig* pipeline) {
  YAML::Node root = detail::load_yaml_file(path);
  detail::YamlReader reader;
  RewardSpec spec;
  // Accept the section alone or wrapped as `reward: {...}`, as it is written in a pipeline.
  const bool wrapped = root.IsMap() && root.size() == 1 && detail::lookup(root, "reward").IsDefined();
  const std::string prefix = wrapped ? "reward" : "";
  detail::read_reward(reader, wrapped ? root["reward"] : root, prefix, spec, /*top_level=*/true);
  detail::validate_reward_stages(reader, spec, prefix, pipeline, pipeline ? pipeline->stages.size() : 0);
  if (!reader.problems.empty()) throw ConfigError(path, std::move(reader.problems));
  return spec;
}

std::string describe_reward(const RewardSpec& spec) {
  std::string s;
  if (spec.type == RewardType::kModel) {
    s = spec.stage.empty() ? "model " + spec.path : "model stage " + spec.stage;
  } else if (spec.type == RewardType::kRules) {
    s = "rules (" + std::to_string(spec.rules.size()) + " checks)";
  } else if (spec.type == RewardType::kHttp) {
    s = "http " + spec.http.url;
  } else if (spec.type == RewardType::kSum) {
    s = "sum of (";
    for (size_t i = 0; i < spec.parts.size(); ++i) {
      std::ostringstream w;
      w << spec.parts[i].weight;
      s += (i ? ", " : "") + w.str() + " * " + describe_reward(spec.parts[i]);
    }
    s += ")";
  }  // no type (no reward): ""
  if (spec.normalize) s += ", normalized";
  if (spec.clip > 0) {
    std::ostringstream c;
    c << spec.clip;
    s += ", clipped to +-" + c.str();
  }
  return s;
}

}  // namespace reglage::config
