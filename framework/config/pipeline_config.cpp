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
#include <optional>
#include <set>
#include <sstream>

#include "framework/config/config_error.h"
#include "framework/config/yaml_reader.h"

namespace reglage::config {

namespace {

// The keys of each section, spelled like the struct fields.
const std::vector<std::string> kTopKeys = {"run_dir", "seed", "threads", "model", "lora", "stages", "launch"};
const std::vector<std::string> kLaunchKeys = {"hosts",          "hostfile",           "np",
                                              "mpirun_args",    "env",                "max_restarts",
                                              "heartbeat_interval_s", "heartbeat_timeout_s", "heartbeat_host",
                                              "startup_timeout_s", "hang_timeout_s",
                                              "status_port",    "status_host"};
const std::vector<std::string> kModelKeys = {"path", "tokenizer", "dtype"};
const std::vector<std::string> kLoraKeys = {"rank", "alpha", "dropout", "targets"};
const std::vector<std::string> kStageKeys = {
    "name",         "type",         "data",         "eval_data",     "train",        "freeze_layers",
    "max_steps",    "epochs",       "batch_size",   "grad_accum",    "lr",           "weight_decay",
    "adam_beta1",   "adam_beta2",   "adam_eps",     "warmup_steps",  "schedule",     "min_lr_ratio",
    "max_grad_norm", "checkpoint_every", "keep_checkpoints", "eval_every", "log_every", "init_from",
    "chat_template", "max_seq_len", "truncate",     "skip_bad_rows", "reward"};
// Keys only ppo stages have, and the common keys ppo stages do not use (with what replaces them).
const std::vector<std::string> kPpoKeys = {
    "rollout_batch_size", "samples_per_prompt", "minibatch_size", "ppo_epochs",   "max_iterations",
    "max_new_tokens",     "temperature",        "top_p",          "kl_coef",      "kl_target",
    "kl_horizon",         "kl_estimator",       "gamma",          "lam",          "clip_range",
    "value_clip_range",   "vf_coef",            "entropy_coef",   "actor_lr",     "critic_lr",
    "warn_kl",            "warn_response_length"};
// Keys only dpo stages have ("beta" grpo stages have too).
const std::vector<std::string> kDpoKeys = {"beta", "loss", "label_smoothing", "rpo_alpha"};
// Keys only grpo stages have, the ppo keys they share (PpoSettings fields), and the keys they do not use.
const std::vector<std::string> kGrpoKeys = {"group_size", "beta"};
const std::vector<std::string> kGrpoPpoKeys = {
    "rollout_batch_size", "minibatch_size", "ppo_epochs", "max_iterations", "max_new_tokens", "temperature",
    "top_p",              "clip_range",     "entropy_coef", "actor_lr",     "warn_kl",        "warn_response_length"};
const std::map<std::string, std::string> kNotForGrpo = {
    {"max_steps", "max_iterations"},       {"epochs", "max_iterations"},
    {"batch_size", "rollout_batch_size"},  {"grad_accum", "minibatch_size"},
    {"lr", "actor_lr"},                    {"freeze_layers", "a LoRA adapter"},
    {"truncate", "max_seq_len on prompts"}, {"samples_per_prompt", "group_size"},
    {"kl_coef", "beta"},                   {"kl_target", "a fixed beta"},
    {"kl_horizon", "a fixed beta"},        {"kl_estimator", "k3, always"},
    {"gamma", "group advantages, no GAE"}, {"lam", "group advantages, no GAE"},
    {"value_clip_range", "no critic"},     {"vf_coef", "no critic"},
    {"critic_lr", "no critic"},            {"loss", "the clipped objective + beta x k3"},
    {"label_smoothing", "the clipped objective + beta x k3"},
    {"rpo_alpha", "the clipped objective + beta x k3"}};
const std::map<std::string, std::string> kNotForPpo = {
    {"max_steps", "max_iterations"}, {"epochs", "max_iterations"},  {"batch_size", "rollout_batch_size"},
    {"grad_accum", "minibatch_size"}, {"lr", "actor_lr and critic_lr"}, {"train", "LoRA adapters (train: lora)"},
    {"freeze_layers", "LoRA adapters"}, {"truncate", "max_seq_len on prompts"}};
const std::vector<std::string> kLoraTargets = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                               "gate_proj", "up_proj", "down_proj", "all-linear"};
using namespace detail;

// Upper bounds of the numeric keys (the README's table). Generous for real runs, small enough that a typo
// (an extra zero or ten) is refused here instead of overflowing a step count or exhausting memory later.
constexpr int64_t kMaxThreads = 1024;           // intra-op threads per rank
constexpr int64_t kMaxLoraRank = 65536;         // also <= min(in, out) of the adapted layers (checked on load)
constexpr double kMaxLoraAlpha = 1e6;
constexpr int64_t kMaxSteps = 1000000000;       // max_steps, warmup_steps, max_iterations, *_every
constexpr int64_t kMaxEpochs = 1000000;
constexpr int64_t kMaxBatch = 1000000;          // batch_size, grad_accum, rollout_batch_size, minibatch_size
constexpr int64_t kMaxSeqLen = 1 << 20;         // max_seq_len, max_new_tokens (tokens)
constexpr int64_t kMaxSamples = 1024;           // samples_per_prompt, group_size
constexpr int64_t kMaxPpoEpochs = 1000;
constexpr int64_t kMaxKeepCheckpoints = 1000;
constexpr int64_t kMaxLayers = 1 << 24;         // freeze_layers (the model's own count is checked on load)
constexpr double kMaxCoef = 1000;               // loss weights and coefficients (kl_coef, vf_coef, beta, ...)
constexpr double kMaxGradNorm = 1e6;
constexpr double kMaxTemperature = 100;
constexpr double kMaxKlHorizon = 1e12;
constexpr double kMaxClip = 1e6;                // clip_range, value_clip_range, kl_target
constexpr int64_t kMaxProcesses = 65536;        // launch.np, launch.hosts[].slots
constexpr int64_t kMaxRestarts = 1000;
constexpr double kMaxSeconds = 7 * 24 * 3600;   // launch durations: a week

// Converts one YAML tree into a PipelineConfig, collecting problems.
class Loader : public YamlReader {
 public:
  bool check_data_files = true;  // stages' data / eval_data must exist (not for export, eval)

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

    const YAML::Node launch = lookup(root, "launch");
    if (check_section(launch, "launch", kLaunchKeys)) {
      c.has_launch = true;
      read_launch(launch, c.launch);
      check_launch_bounds(c.launch);
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
  std::set<std::string> stage_bad_;                  // stages that are not mappings
  std::map<std::string, std::string> type_texts_;    // "stages[i]" -> its type as written ("" = absent)

  // The stage's type; none when absent or unknown (then only the checks common to all types run).
  std::optional<StageType> type_of(const std::string& p) const {
    StageType t;
    auto it = type_texts_.find(p);
    if (it == type_texts_.end() || !parse_choice(it->second, t)) return std::nullopt;
    return t;
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
    std::string type;  // as written: an unknown type still gets the key checks of an untyped stage
    read_string(node, p, "type", type);
    type_texts_[p] = type;
    parse_choice(type, s.type);
    std::vector<std::string> valid = kStageKeys;
    for (const auto* keys : {&kPpoKeys, &kDpoKeys, &kGrpoKeys})
      for (const std::string& key : *keys)
        if (!contains(valid, key)) valid.push_back(key);
    check_keys(node, p, valid);
    check_stage_type_keys(node, p, type);
    read_string(node, p, "name", s.name);
    read_string(node, p, "data", s.data);
    read_string(node, p, "eval_data", s.eval_data);
    read_choice(node, p, "train", s.train);
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
    read_choice(node, p, "schedule", s.schedule);
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
    const YAML::Node reward = lookup(node, "reward");
    if (reward.IsDefined() && !reward.IsNull()) read_reward(*this, reward, p + ".reward", s.reward, /*top_level=*/true);
    read_ppo(node, p, s.ppo);
    read_double(node, p, "beta", type == "grpo" ? s.grpo.beta : s.dpo.beta);
    read_int(node, p, "group_size", s.grpo.group_size);
    read_choice(node, p, "loss", s.dpo.loss);
    read_double(node, p, "label_smoothing", s.dpo.label_smoothing);
    read_double(node, p, "rpo_alpha", s.dpo.rpo_alpha);
    return s;
  }

  bool read_string_list(const YAML::Node& map, const std::string& prefix, const std::string& name,
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
      if (!node[i].IsScalar()) add(key + "[" + std::to_string(i) + "]", node[i].Mark(), "= " + describe(node[i]) + " (expected a string)");
      else out.push_back(node[i].Scalar());
    }
    return true;
  }

  void read_launch(const YAML::Node& node, LaunchSection& l) {
    const YAML::Node hosts = lookup(node, "hosts");
    if (hosts.IsDefined() && !hosts.IsNull()) {
      if (!hosts.IsSequence()) {
        add("launch.hosts", hosts.Mark(), "= " + describe(hosts) + " (expected a list of {host: NAME, slots: N})");
      } else {
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
          l.hosts.push_back(h);
        }
      }
    }
    read_string(node, "launch", "hostfile", l.hostfile);
    read_int(node, "launch", "np", l.np);
    read_string_list(node, "launch", "mpirun_args", l.mpirun_args);
    read_string_list(node, "launch", "env", l.env);
    read_int(node, "launch", "max_restarts", l.max_restarts);
    read_double(node, "launch", "heartbeat_interval_s", l.heartbeat_interval_s);
    read_double(node, "launch", "heartbeat_timeout_s", l.heartbeat_timeout_s);
    read_string(node, "launch", "heartbeat_host", l.heartbeat_host);
    read_double(node, "launch", "startup_timeout_s", l.startup_timeout_s);
    read_double(node, "launch", "hang_timeout_s", l.hang_timeout_s);
    read_int(node, "launch", "status_port", l.status_port);
    read_string(node, "launch", "status_host", l.status_host);
    if (!l.hosts.empty() && !l.hostfile.empty())
      add("launch.hostfile", mark_of("launch.hostfile"), "set only one of hosts and hostfile");
    check_exists("launch.hostfile", l.hostfile);
    check("launch.np", l.np >= 0, l.np, "must be >= 0; 0 = the hosts' slots or this machine's cores");
    check("launch.max_restarts", l.max_restarts >= 0, l.max_restarts, "must be >= 0");
    check("launch.heartbeat_interval_s", l.heartbeat_interval_s > 0, l.heartbeat_interval_s, "must be > 0");
    check("launch.heartbeat_timeout_s", l.heartbeat_timeout_s > l.heartbeat_interval_s, l.heartbeat_timeout_s,
          "must be > heartbeat_interval_s");
    check("launch.startup_timeout_s", std::isfinite(l.startup_timeout_s) && l.startup_timeout_s > 0,
          l.startup_timeout_s, "must be finite and > 0");
    check("launch.hang_timeout_s", std::isfinite(l.hang_timeout_s) && l.hang_timeout_s > l.heartbeat_interval_s,
          l.hang_timeout_s, "must be finite and > heartbeat_interval_s");
    check("launch.status_port", l.status_port >= 0 && l.status_port <= 65535, l.status_port, "must be in [0, 65535]; 0 = off");
  }

  // Upper bounds of the launch keys (their lower bounds are checked by read_launch).
  void check_launch_bounds(const LaunchSection& l) {
    for (size_t i = 0; i < l.hosts.size(); ++i)
      check_max("launch.hosts[" + std::to_string(i) + "].slots", l.hosts[i].slots, kMaxProcesses);
    check_max("launch.np", l.np, kMaxProcesses);
    check_max("launch.max_restarts", l.max_restarts, kMaxRestarts);
    check_max("launch.heartbeat_interval_s", l.heartbeat_interval_s, kMaxSeconds);
    check_max("launch.heartbeat_timeout_s", l.heartbeat_timeout_s, kMaxSeconds);
  }

  // Keys of another stage type: ppo keys in an sft stage, max_steps in a ppo stage, kl_coef in a grpo stage.
  void check_stage_type_keys(const YAML::Node& node, const std::string& p, const std::string& type) {
    const std::string this_stage = " (this stage is " + (type.empty() ? std::string("untyped") : type) + ")";
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) continue;
      const std::string name = kv.first.Scalar();
      const std::string key = p + "." + name;
      if (type == "ppo") {
        auto it = kNotForPpo.find(name);
        if (it != kNotForPpo.end()) add(key, kv.first.Mark(), "not used by ppo stages (they use " + it->second + ")");
      } else if (type == "grpo") {
        auto it = kNotForGrpo.find(name);
        if (it != kNotForGrpo.end()) add(key, kv.first.Mark(), "not used by grpo stages (they use " + it->second + ")");
      } else if (contains(kGrpoPpoKeys, name) || name == "reward") {
        add(key, kv.first.Mark(), "only ppo and grpo stages have this key" + this_stage);
      } else if (contains(kPpoKeys, name)) {
        add(key, kv.first.Mark(), "only ppo stages have this key" + this_stage);
      }
      if (type != "grpo" && name == "group_size")
        add(key, kv.first.Mark(), "only grpo stages have this key" + this_stage);
      else if (type != "dpo" && type != "grpo" && name == "beta")
        add(key, kv.first.Mark(), "only dpo and grpo stages have this key" + this_stage);
      else if (type != "dpo" && type != "grpo" && contains(kDpoKeys, name))  // grpo: kNotForGrpo names them
        add(key, kv.first.Mark(), "only dpo stages have this key" + this_stage);
    }
  }

  void read_ppo(const YAML::Node& node, const std::string& p, PpoSettings& o) {
    read_int(node, p, "rollout_batch_size", o.rollout_batch_size);
    read_int(node, p, "samples_per_prompt", o.samples_per_prompt);
    read_int(node, p, "minibatch_size", o.minibatch_size);
    read_int(node, p, "ppo_epochs", o.ppo_epochs);
    read_int(node, p, "max_iterations", o.max_iterations);
    read_int(node, p, "max_new_tokens", o.max_new_tokens);
    read_double(node, p, "temperature", o.temperature);
    read_double(node, p, "top_p", o.top_p);
    read_double(node, p, "kl_coef", o.kl_coef);
    read_double(node, p, "kl_target", o.kl_target);
    read_double(node, p, "kl_horizon", o.kl_horizon);
    read_choice(node, p, "kl_estimator", o.kl_estimator);
    read_double(node, p, "gamma", o.gamma);
    read_double(node, p, "lam", o.lam);
    read_double(node, p, "clip_range", o.clip_range);
    read_double(node, p, "value_clip_range", o.value_clip_range);
    read_double(node, p, "vf_coef", o.vf_coef);
    read_double(node, p, "entropy_coef", o.entropy_coef);
    read_double(node, p, "actor_lr", o.actor_lr);
    read_double(node, p, "critic_lr", o.critic_lr);
    read_double(node, p, "warn_kl", o.warn_kl);
    read_int(node, p, "warn_response_length", o.warn_response_length);
  }

  void validate_ppo(const StageConfig& s, const std::string& p, int world_size) {
    auto k = [&](const char* field) { return p + "." + field; };
    const PpoSettings& o = s.ppo;
    check(k("rollout_batch_size"), o.rollout_batch_size > 0, o.rollout_batch_size, "must be > 0");
    check(k("samples_per_prompt"), o.samples_per_prompt > 0, o.samples_per_prompt, "must be > 0");
    check(k("minibatch_size"), o.minibatch_size > 0, o.minibatch_size, "must be > 0");
    check(k("ppo_epochs"), o.ppo_epochs > 0, o.ppo_epochs, "must be > 0");
    if (o.max_iterations == 0 && !bad_.count(k("max_iterations")))
      add(k("max_iterations"), mark_of(k("max_iterations")), "required: the number of PPO iterations, > 0");
    else
      check(k("max_iterations"), o.max_iterations > 0, o.max_iterations, "must be > 0");
    check(k("max_new_tokens"), o.max_new_tokens > 0, o.max_new_tokens, "must be > 0");
    check(k("temperature"), o.temperature > 0, o.temperature, "must be > 0");
    check(k("top_p"), o.top_p > 0 && o.top_p <= 1, o.top_p, "must be in (0, 1]");
    check(k("kl_coef"), o.kl_coef >= 0, o.kl_coef, "must be >= 0");
    check(k("kl_target"), o.kl_target >= 0, o.kl_target, "must be >= 0; 0 = fixed kl_coef");
    check(k("kl_horizon"), o.kl_horizon > 0, o.kl_horizon, "must be > 0");
    check(k("gamma"), o.gamma >= 0 && o.gamma <= 1, o.gamma, "must be in [0, 1]");
    check(k("lam"), o.lam >= 0 && o.lam <= 1, o.lam, "must be in [0, 1]");
    check(k("clip_range"), o.clip_range > 0, o.clip_range, "must be > 0");
    check(k("value_clip_range"), o.value_clip_range >= 0, o.value_clip_range, "must be >= 0; 0 = off");
    check(k("vf_coef"), o.vf_coef > 0, o.vf_coef, "must be > 0");
    check(k("entropy_coef"), o.entropy_coef >= 0, o.entropy_coef, "must be >= 0");
    check(k("actor_lr"), o.actor_lr > 0, o.actor_lr, "must be > 0");
    check(k("critic_lr"), o.critic_lr > 0, o.critic_lr, "must be > 0");
    check(k("warn_kl"), o.warn_kl >= 0, o.warn_kl, "must be >= 0; 0 = off");
    check(k("warn_response_length"), o.warn_response_length >= 0, o.warn_response_length, "must be >= 0; 0 = off");
    check_rollout_bounds(s, p);
    const int64_t responses = o.rollout_batch_size * o.samples_per_prompt;
    if (o.rollout_batch_size > 0 && o.samples_per_prompt > 0 && world_size > 0)
      check(k("rollout_batch_size"), responses % world_size == 0, o.rollout_batch_size,
            "rollout_batch_size x samples_per_prompt = " + std::to_string(responses) +
                " must be divisible by world size " + std::to_string(world_size));
    if (o.minibatch_size > 0 && world_size > 0)
      check(k("minibatch_size"), o.minibatch_size % world_size == 0, o.minibatch_size,
            "must be divisible by world size " + std::to_string(world_size));
    if (o.minibatch_size > 0 && responses > 0)
      check(k("minibatch_size"), responses % o.minibatch_size == 0, o.minibatch_size,
            "must divide rollout_batch_size x samples_per_prompt = " + std::to_string(responses));
    if (text_of(k("reward.type")).empty() && !bad_.count(k("reward")))
      add(k("reward"), mark_of(k("reward")), "required: the reward to optimise, e.g. {type: model, stage: rm}");
  }



  // The upper bounds of the ppo keys (those grpo shares and ppo's own) and of grpo's; lower bounds are
  // checked by validate_ppo / validate_grpo with their own messages.
  void check_rollout_bounds(const StageConfig& s, const std::string& p) {
    auto k = [&](const char* field) { return p + "." + field; };
    const PpoSettings& o = s.ppo;
    check_max(k("rollout_batch_size"), o.rollout_batch_size, kMaxBatch);
    check_max(k("minibatch_size"), o.minibatch_size, kMaxBatch);
    check_max(k("ppo_epochs"), o.ppo_epochs, kMaxPpoEpochs);
    check_max(k("max_iterations"), o.max_iterations, kMaxSteps);
    check_max(k("max_new_tokens"), o.max_new_tokens, kMaxSeqLen);
    check_max(k("temperature"), o.temperature, kMaxTemperature);
    check_max(k("clip_range"), o.clip_range, kMaxClip);
    check_max(k("entropy_coef"), o.entropy_coef, kMaxCoef);
    check_max(k("actor_lr"), o.actor_lr, 1.0, " (a peak learning rate)");
    check_max(k("warn_response_length"), o.warn_response_length, kMaxSeqLen);
    if (s.type == StageType::kGrpo) {
      check_max(k("group_size"), s.grpo.group_size, kMaxSamples);
      check_max(k("beta"), s.grpo.beta, kMaxCoef);
      return;
    }
    check_max(k("samples_per_prompt"), o.samples_per_prompt, kMaxSamples);
    check_max(k("kl_coef"), o.kl_coef, kMaxCoef);
    check_max(k("kl_target"), o.kl_target, kMaxClip);
    check_max(k("kl_horizon"), o.kl_horizon, kMaxKlHorizon);
    check_max(k("value_clip_range"), o.value_clip_range, kMaxClip);
    check_max(k("vf_coef"), o.vf_coef, kMaxCoef);
    check_max(k("critic_lr"), o.critic_lr, 1.0, " (a peak learning rate)");
  }

  // grpo: its own keys, the ppo keys it shares (same checks and messages as ppo), groups whole on each rank.
  void validate_grpo(const StageConfig& s, const std::string& p, int world_size) {
    auto k = [&](const char* field) { return p + "." + field; };
    const PpoSettings& o = s.ppo;
    const GrpoSettings& g = s.grpo;
    check(k("group_size"), g.group_size >= 2, g.group_size,
          "must be >= 2: advantages compare the responses of one prompt's group");
    check(k("beta"), g.beta >= 0, g.beta, "must be >= 0; 0 = no KL term");
    check(k("rollout_batch_size"), o.rollout_batch_size > 0, o.rollout_batch_size, "must be > 0");
    check(k("minibatch_size"), o.minibatch_size > 0, o.minibatch_size, "must be > 0");
    check(k("ppo_epochs"), o.ppo_epochs > 0, o.ppo_epochs, "must be > 0");
    if (o.max_iterations == 0 && !bad_.count(k("max_iterations")))
      add(k("max_iterations"), mark_of(k("max_iterations")), "required: the number of GRPO iterations, > 0");
    else
      check(k("max_iterations"), o.max_iterations > 0, o.max_iterations, "must be > 0");
    check(k("max_new_tokens"), o.max_new_tokens > 0, o.max_new_tokens, "must be > 0");
    check(k("temperature"), o.temperature > 0, o.temperature, "must be > 0");
    check(k("top_p"), o.top_p > 0 && o.top_p <= 1, o.top_p, "must be in (0, 1]");
    check(k("clip_range"), o.clip_range > 0, o.clip_range, "must be > 0");
    check(k("entropy_coef"), o.entropy_coef >= 0, o.entropy_coef, "must be >= 0");
    check(k("actor_lr"), o.actor_lr > 0, o.actor_lr, "must be > 0");
    check(k("warn_kl"), o.warn_kl >= 0, o.warn_kl, "must be >= 0; 0 = off");
    check(k("warn_response_length"), o.warn_response_length >= 0, o.warn_response_length, "must be >= 0; 0 = off");
    check_rollout_bounds(s, p);
    check(k("train"), s.train == TrainMode::kLora, to_string(s.train),
          "grpo stages train a LoRA adapter: the reference policy is the model with the adapter off");
    if (o.rollout_batch_size > 0 && world_size > 0)
      check(k("rollout_batch_size"), o.rollout_batch_size % world_size == 0, o.rollout_batch_size,
            "must be divisible by world size " + std::to_string(world_size) +
                " (prompts per iteration; a prompt's group stays on one rank)");
    if (o.minibatch_size > 0 && world_size > 0)
      check(k("minibatch_size"), o.minibatch_size % world_size == 0, o.minibatch_size,
            "must be divisible by world size " + std::to_string(world_size));
    const int64_t responses = o.rollout_batch_size * g.group_size;
    if (o.minibatch_size > 0 && o.rollout_batch_size > 0 && g.group_size >= 2)
      check(k("minibatch_size"), responses % o.minibatch_size == 0, o.minibatch_size,
            "must divide rollout_batch_size x group_size = " + std::to_string(responses));
    if (text_of(k("reward.type")).empty() && !bad_.count(k("reward")))
      add(k("reward"), mark_of(k("reward")), "required: the reward to optimise, e.g. {type: rules, rules: [...]}");
  }

  void validate_dpo(const StageConfig& s, const std::string& p) {
    auto k = [&](const char* field) { return p + "." + field; };
    const DpoSettings& o = s.dpo;
    check(k("beta"), o.beta > 0, o.beta, "must be > 0");
    check_max(k("beta"), o.beta, kMaxCoef);
    check_max(k("rpo_alpha"), o.rpo_alpha, kMaxCoef);
    check(k("rpo_alpha"), o.rpo_alpha >= 0, o.rpo_alpha, "must be >= 0 (0 = no NLL term)");
    if (o.loss == LossType::kCdpo)
      check(k("label_smoothing"), o.label_smoothing > 0 && o.label_smoothing < 0.5, o.label_smoothing,
            "must be in (0, 0.5) with loss: cdpo");
    else
      check(k("label_smoothing"), o.label_smoothing == 0, o.label_smoothing,
            "only loss: cdpo uses it (this stage's loss is " + std::string(to_string(o.loss)) + ")");
    check(k("train"), s.train == TrainMode::kLora, to_string(s.train),
          "dpo stages train a LoRA adapter: the reference policy is the model with the adapter off");
  }

  void validate(const PipelineConfig& c, int world_size) {
    check("threads", c.threads >= 0, c.threads, "must be >= 0");
    check_max("threads", c.threads, kMaxThreads, " (0 = cores / ranks on this host)");
    check_exists("model.path", c.model.path);
    check_exists("model.tokenizer", c.model.tokenizer);
    check_choice("model.dtype", c.model.dtype, {"float32", "bfloat16"});
    check("lora.rank", c.lora.rank > 0, c.lora.rank, "must be > 0");
    check_max("lora.rank", c.lora.rank, kMaxLoraRank);
    check("lora.alpha", c.lora.alpha > 0, c.lora.alpha, "must be > 0");
    check_max("lora.alpha", c.lora.alpha, kMaxLoraAlpha);
    check("lora.dropout", c.lora.dropout >= 0 && c.lora.dropout < 1, c.lora.dropout, "must be in [0, 1)");

    std::map<std::string, size_t> first_index;  // stage name -> the first stage with it
    for (size_t i = 0; i < c.stages.size(); ++i) first_index.emplace(c.stages[i].name, i);
    std::vector<std::string> names;
    for (const StageConfig& s : c.stages) names.push_back(s.name);
    for (size_t i = 0; i < c.stages.size(); ++i) {
      const std::string p = "stages[" + std::to_string(i) + "]";
      if (stage_bad_.count(p)) continue;
      validate_stage(c.stages[i], i, p, first_index, names, world_size);
      const std::optional<StageType> type = type_of(p);
      if (type == StageType::kDpo) validate_dpo(c.stages[i], p);
      if (type == StageType::kPpo || type == StageType::kGrpo) {
        if (type == StageType::kPpo) validate_ppo(c.stages[i], p, world_size);
        else validate_grpo(c.stages[i], p, world_size);
        validate_reward_stages(*this, c.stages[i].reward, p + ".reward", &c, i);
      }
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
    const std::optional<StageType> type = type_of(p);
    if (type_texts_.at(p).empty()) {
      if (!bad_.count(k("type"))) add(k("type"), mark_of(k("type")), "required (" + choice_list<StageType>() + ")");
    } else {
      check(k("type"), type.has_value(), type_texts_.at(p), "unknown stage type; expected " + choice_list<StageType>());
    }
    if (s.data.empty()) {
      if (!bad_.count(k("data"))) add(k("data"), mark_of(k("data")), "required (the training JSONL)");
    } else if (check_data_files) {
      check_exists(k("data"), s.data);
    }
    if (check_data_files) check_exists(k("eval_data"), s.eval_data);
    check(k("freeze_layers"), s.freeze_layers >= 0, s.freeze_layers, "must be >= 0");
    check_max(k("freeze_layers"), s.freeze_layers, kMaxLayers);
    check(k("freeze_layers"), s.freeze_layers <= 0 || s.train == TrainMode::kFullFreezeLower, s.freeze_layers,
          "only with train: full_freeze_lower");
    if (type != StageType::kPpo && type != StageType::kGrpo) {  // these count iterations and rollouts instead (validate_ppo/grpo)
      check(k("max_steps"), s.max_steps >= 0, s.max_steps, "must be >= 0");
      check(k("epochs"), s.epochs >= 0, s.epochs, "must be >= 0");
      check_max(k("max_steps"), s.max_steps, kMaxSteps);
      check_max(k("epochs"), s.epochs, kMaxEpochs, " (steps = rows x epochs / batch_size must fit)");
      if (s.max_steps >= 0 && s.epochs >= 0 && !bad_.count(k("max_steps")) && !bad_.count(k("epochs"))) {
        if (s.max_steps > 0 && s.epochs > 0)
          check(k("epochs"), false, s.epochs, "set only one of max_steps and epochs; max_steps is " +
                                                   std::to_string(s.max_steps));
        if (s.max_steps == 0 && s.epochs == 0)
          add(k("max_steps"), mark_of(k("max_steps")), "required: exactly one of max_steps and epochs must be > 0");
      }
      check(k("batch_size"), s.batch_size > 0, s.batch_size, "must be > 0");
      check(k("grad_accum"), s.grad_accum > 0, s.grad_accum, "must be > 0");
      check_max(k("batch_size"), s.batch_size, kMaxBatch);
      check_max(k("grad_accum"), s.grad_accum, kMaxBatch);
      if (s.batch_size > 0 && s.grad_accum > 0 && world_size > 0 && !bad_.count(k("grad_accum"))) {
        const int64_t per_step = int64_t(world_size) * s.grad_accum;
        check(k("batch_size"), s.batch_size % per_step == 0, s.batch_size,
              "must be divisible by world size " + std::to_string(world_size) + " x grad_accum " +
                  std::to_string(s.grad_accum) + " = " + std::to_string(per_step));
      }
      check(k("lr"), s.lr > 0, s.lr, "must be > 0");
      check_max(k("lr"), s.lr, 1.0, " (a peak learning rate)");
    }
    check(k("weight_decay"), s.weight_decay >= 0, s.weight_decay, "must be >= 0");
    check_max(k("weight_decay"), s.weight_decay, 1.0, " (decoupled decay shrinks weights by lr x weight_decay per step)");
    check(k("adam_beta1"), s.adam_beta1 >= 0 && s.adam_beta1 < 1, s.adam_beta1, "must be in [0, 1)");
    check(k("adam_beta2"), s.adam_beta2 >= 0 && s.adam_beta2 < 1, s.adam_beta2, "must be in [0, 1)");
    check(k("adam_eps"), s.adam_eps > 0, s.adam_eps, "must be > 0");
    check(k("adam_eps"), s.adam_eps < 1, s.adam_eps, "must be < 1 (it guards a division; typical 1e-8)");
    check(k("warmup_steps"), s.warmup_steps >= 0, s.warmup_steps, "must be >= 0");
    check_max(k("warmup_steps"), s.warmup_steps, kMaxSteps);
    check(k("min_lr_ratio"), s.min_lr_ratio >= 0 && s.min_lr_ratio <= 1, s.min_lr_ratio, "must be in [0, 1]");
    check(k("max_grad_norm"), s.max_grad_norm >= 0, s.max_grad_norm, "must be >= 0; 0 = off");
    check_max(k("max_grad_norm"), s.max_grad_norm, kMaxGradNorm);
    check(k("checkpoint_every"), s.checkpoint_every >= 0, s.checkpoint_every, "must be >= 0");
    check_max(k("checkpoint_every"), s.checkpoint_every, kMaxSteps);
    check(k("keep_checkpoints"), s.keep_checkpoints >= 1, s.keep_checkpoints, "must be >= 1");
    check_max(k("keep_checkpoints"), s.keep_checkpoints, kMaxKeepCheckpoints);
    check(k("eval_every"), s.eval_every >= 0, s.eval_every, "must be >= 0");
    check_max(k("eval_every"), s.eval_every, kMaxSteps);
    check(k("log_every"), s.log_every >= 1, s.log_every, "must be >= 1");
    check_max(k("log_every"), s.log_every, kMaxSteps);
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
    check_max(k("max_seq_len"), s.max_seq_len, kMaxSeqLen);
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

PipelineConfig load_pipeline(const std::string& path, const std::vector<std::string>& overrides, int world_size,
                             DataFiles data_files) {
  YAML::Node root = load_yaml_file(path);
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);  // an empty file: report what is missing
  if (!root.IsMap()) {
    const YAML::Mark m = root.Mark();
    throw ConfigError(path, {ConfigProblem{m.line + 1, m.column + 1, "",
                                           "expected a mapping with run_dir, model, lora and stages"}});
  }

  Loader loader;
  loader.check_data_files = data_files == DataFiles::must_exist;
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
