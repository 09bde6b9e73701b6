// Loading a pipeline YAML: parse, apply the command line's overrides to the tree, read every section through
// its key table (config_fields.h), validate (config_validate.cpp). Every problem is collected with its file
// position and thrown together. Loading creates nothing and needs no world size.
#include <yaml-cpp/yaml.h>

#include "framework/config/config_error.h"
#include "framework/config/config_loader.h"

namespace reglage::config {

namespace detail {

namespace {

constexpr int64_t kMaxProcesses = 65536;  // launch.hosts[].slots (as launch.np)

template <typename S>
std::vector<std::string> key_names(const std::vector<Field<S>>& fields) {
  std::vector<std::string> names;
  for (const Field<S>& f : fields)
    if (!contains(names, f.name)) names.push_back(f.name);
  return names;
}

}  // namespace

std::optional<StageType> Loader::type_of(const std::string& p) const {
  StageType t;
  auto it = type_texts_.find(p);
  if (it == type_texts_.end() || !parse_choice(it->second, t)) return std::nullopt;
  return t;
}

// The table's keys that `stage_mask` takes, read with their type checks; a row read by code is skipped.
template <typename S>
void Loader::read_fields(const YAML::Node& map, const std::string& prefix, const std::vector<Field<S>>& fields,
                         S& out, unsigned stage_mask) {
  for (const Field<S>& f : fields) {
    if (f.custom_read || (f.stages & stage_mask) == 0) continue;
    switch (f.kind) {
      case Kind::kInt: read_int(map, prefix, f.name, f.template get<int64_t>(out)); break;
      case Kind::kDouble: read_double(map, prefix, f.name, f.template get<double>(out)); break;
      case Kind::kBool: read_bool(map, prefix, f.name, f.template get<bool>(out)); break;
      case Kind::kString: read_string(map, prefix, f.name, f.template get<std::string>(out)); break;
      case Kind::kChoice: {
        std::string text;
        if (read_string(map, prefix, f.name, text) && !f.choice_parse(f.at(out), text))
          check(child_key(prefix, f.name), false, text, "expected " + one_of(f.choices));
        break;
      }
      case Kind::kStrings:
        read_string_list(map, prefix, f.name, f.template get<std::vector<std::string>>(out));
        break;
      case Kind::kUint:
      case Kind::kCustom: break;  // seed, reward, hosts: their own code
    }
  }
}

void Loader::read_seed(const YAML::Node& root, uint64_t& out) {
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

void Loader::read_targets(const YAML::Node& lora, std::vector<std::string>& out) {
  const YAML::Node node = lookup(lora, "targets");
  if (!node.IsDefined()) return;
  if (!node.IsSequence()) {
    bad_.insert("lora.targets");
    add("lora.targets", node.Mark(), "= " + describe(node) + " (expected a list, e.g. [q_proj, v_proj])");
    return;
  }
  std::vector<std::string> known;  // the targets row's layer names
  for (const Field<LoraSection>& f : lora_fields())
    if (std::string(f.name) == "targets") known = f.choices;
  std::vector<std::string> targets;
  for (size_t i = 0; i < node.size(); ++i) {
    const std::string key = "lora.targets[" + std::to_string(i) + "]";
    const YAML::Node t = node[i];
    if (!t.IsScalar()) {
      add(key, t.Mark(), "= " + describe(t) + " (expected a layer name)");
    } else if (!contains(known, t.Scalar())) {
      add(key, t.Mark(), "= " + t.Scalar() + " (expected " + one_of(known) + ")");
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

bool Loader::read_string_list(const YAML::Node& map, const std::string& prefix, const std::string& name,
                              std::vector<std::string>& out) {
  const YAML::Node node = lookup(map, name);
  if (!node.IsDefined() || node.IsNull()) return false;
  const std::string key = child_key(prefix, name);
  if (!node.IsSequence()) {
    bad_.insert(key);
    add(key, node.Mark(), "= " + describe(node) + " (expected a list of strings)");
    return false;
  }
  for (size_t i = 0; i < node.size(); ++i) {
    if (!node[i].IsScalar())
      add(key + "[" + std::to_string(i) + "]", node[i].Mark(), "= " + describe(node[i]) + " (expected a string)");
    else
      out.push_back(node[i].Scalar());
  }
  return true;
}

void Loader::read_hosts(const YAML::Node& launch, LaunchSection& l) {
  const YAML::Node hosts = lookup(launch, "hosts");
  if (!hosts.IsDefined() || hosts.IsNull()) return;
  if (!hosts.IsSequence()) {
    add("launch.hosts", hosts.Mark(), "= " + describe(hosts) + " (expected a list of {host: NAME, slots: N})");
    return;
  }
  for (size_t i = 0; i < hosts.size(); ++i) {
    const std::string p = "launch.hosts[" + std::to_string(i) + "]";
    LaunchHost h;
    if (!check_section(hosts[i], p, {"host", "slots"})) {
      add(p, hosts[i].Mark(), "expected {host: NAME, slots: N}");
      continue;
    }
    read_string(hosts[i], p, "host", h.host);
    read_int(hosts[i], p, "slots", h.slots);
    if (h.host.empty()) add(p + ".host", hosts[i].Mark(), "required (a host name or address)");
    check(p + ".slots", h.slots > 0, h.slots, "must be > 0");
    check_max(p + ".slots", h.slots, kMaxProcesses);
    l.hosts.push_back(h);
  }
}

// Keys of another stage type: ppo keys in an sft stage, max_steps in a ppo stage, kl_coef in a grpo stage.
// The table says which types take a key and what the others use instead.
void Loader::check_stage_type_keys(const YAML::Node& node, const std::string& p, const std::string& type,
                                   unsigned mask) {
  const std::string this_stage = " (this stage is " + (type.empty() ? std::string("untyped") : type) + ")";
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) continue;
    const std::string name = kv.first.Scalar();
    unsigned takes = 0;
    const char* instead = nullptr;
    for (const Field<StageConfig>& f : stage_fields()) {
      if (name != f.name) continue;
      takes |= f.stages;
      for (const Hint& h : f.hints)
        if (stage_bit(h.type) & mask) instead = h.instead;
    }
    if (takes == 0 || (takes & mask) != 0) continue;  // unknown (check_keys says so) or taken
    if (instead != nullptr)
      add(p + "." + name, kv.first.Mark(), "not used by " + type + " stages (they use " + instead + ")");
    else
      add(p + "." + name, kv.first.Mark(), "only " + stage_list(takes) + " stages have this key" + this_stage);
  }
}

StageConfig Loader::read_stage(const YAML::Node& node, const std::string& p) {
  StageConfig s;
  if (!node.IsMap()) {
    add(p, node.Mark(), "= " + describe(node) + " (expected a mapping with name, type, data, ...)");
    stage_bad_.insert(p);
    return s;
  }
  section_marks_[p] = node.Mark();
  std::string type;  // as written: an unknown type still gets the checks of the common keys
  read_string(node, p, "type", type);
  type_texts_[p] = type;
  parse_choice(type, s.type);
  const unsigned mask = stage_mask(type_of(p));
  check_keys(node, p, key_names(stage_fields()));
  check_stage_type_keys(node, p, type, mask);
  read_fields(node, p, stage_fields(), s, mask);
  const YAML::Node reward = lookup(node, "reward");
  if ((mask & (kPpo | kGrpo)) && reward.IsDefined() && !reward.IsNull())
    read_reward(*this, reward, p + ".reward", s.reward, /*top_level=*/true);
  return s;
}

PipelineConfig Loader::convert(const YAML::Node& root) {
  PipelineConfig c;
  section_marks_[""] = root.Mark();
  std::vector<std::string> top_keys = key_names(top_fields());
  top_keys.insert(top_keys.end(), top_sections().begin(), top_sections().end());
  check_keys(root, "", top_keys);
  read_fields(root, "", top_fields(), c);
  read_seed(root, c.seed);
  if (c.run_dir.empty() && !bad_.count("run_dir"))
    add("run_dir", root.Mark(), "required (the directory for this run's outputs)");

  const YAML::Node model = lookup(root, "model");
  if (check_section(model, "model", key_names(model_fields()))) {
    read_fields(model, "model", model_fields(), c.model);
    if (c.model.path.empty() && !bad_.count("model.path"))
      add("model.path", mark_of("model.path"), "required (the model file or directory)");
  } else if (!model.IsDefined() || model.IsNull()) {
    add("model", root.Mark(), "required (a mapping with path, and optionally tokenizer and dtype)");
  }

  const YAML::Node lora = lookup(root, "lora");
  if (check_section(lora, "lora", key_names(lora_fields()))) {
    read_fields(lora, "lora", lora_fields(), c.lora);
    read_targets(lora, c.lora.targets);
  }

  const YAML::Node launch = lookup(root, "launch");
  if (check_section(launch, "launch", key_names(launch_fields()))) {
    c.has_launch = true;
    read_hosts(launch, c.launch);
    read_fields(launch, "launch", launch_fields(), c.launch);
  }

  const YAML::Node stages = lookup(root, "stages");
  if (stages.IsDefined() && !stages.IsNull() && !stages.IsSequence()) {
    add("stages", stages.Mark(), "= " + describe(stages) + " (expected a list of stages)");
  } else if (!stages.IsDefined() || stages.IsNull() || stages.size() == 0) {
    add("stages", stages.IsDefined() ? stages.Mark() : root.Mark(), "at least one stage is required");
  } else {
    for (size_t i = 0; i < stages.size(); ++i) c.stages.push_back(read_stage(stages[i], "stages[" + std::to_string(i) + "]"));
  }
  validate(c);
  return c;
}

}  // namespace detail

PipelineConfig load_pipeline(const std::string& path, const std::vector<std::string>& overrides, DataFiles data_files) {
  YAML::Node root = detail::load_yaml_file(path);
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);  // an empty file: report what is missing
  if (!root.IsMap()) {
    const YAML::Mark m = root.Mark();
    throw ConfigError(path, {ConfigProblem{m.line + 1, m.column + 1, "",
                                           "expected a mapping with run_dir, model, lora and stages"}});
  }
  detail::Loader loader;
  loader.check_data_files = data_files == DataFiles::must_exist;
  for (const std::string& o : overrides) loader.apply_override(root, o);
  PipelineConfig config = loader.convert(root);
  config.source = path;
  config.places = loader.places();
  if (!loader.problems.empty()) {
    detail::sort_problems(loader.problems);
    throw ConfigError(path, std::move(loader.problems));
  }
  return config;
}

}  // namespace reglage::config
