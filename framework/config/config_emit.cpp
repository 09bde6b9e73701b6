// Writing a resolved pipeline back as YAML, generated from the key tables (config_fields.h): the whole
// config (run_dir/config.yaml) and one stage's settings (hashed to decide whether a finished stage must run
// again; tests/unit/test_config_golden.cpp holds its text fixed).
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <cstdlib>

#include "framework/config/config_fields.h"

namespace reglage::config {

namespace {

// One key of a table: `name: value` as its kind writes it (kCustom keys: the caller's code).
template <typename S>
void emit_field(YAML::Emitter& out, const Field<S>& f, const S& s) {
  out << YAML::Key << f.name << YAML::Value;
  switch (f.kind) {
    case Kind::kInt: out << f.template get<int64_t>(s); break;
    case Kind::kUint: out << f.template get<uint64_t>(s); break;
    case Kind::kDouble: out << format_double(f.template get<double>(s)); break;
    case Kind::kBool: out << f.template get<bool>(s); break;
    case Kind::kString: out << f.template get<std::string>(s); break;
    case Kind::kChoice: out << field_text(f, s); break;
    case Kind::kStrings:
      out << YAML::Flow << YAML::BeginSeq;
      for (const std::string& item : f.template get<std::vector<std::string>>(s)) out << item;
      out << YAML::EndSeq;
      break;
    case Kind::kCustom: break;
  }
}

void emit_model(YAML::Emitter& out, const ModelSection& m) {
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  for (const Field<ModelSection>& f : model_fields()) emit_field(out, f, m);
  out << YAML::EndMap;
}

void emit_lora(YAML::Emitter& out, const LoraSection& l) {
  out << YAML::Key << "lora" << YAML::Value << YAML::BeginMap;
  for (const Field<LoraSection>& f : lora_fields()) emit_field(out, f, l);
  out << YAML::EndMap;
}

void emit_rule(YAML::Emitter& out, const RuleConfig& r) {
  out << YAML::BeginMap;
  out << YAML::Key << "principle" << YAML::Value << r.principle;
  out << YAML::Key << "kind" << YAML::Value << r.kind;
  out << YAML::Key << "weight" << YAML::Value << format_double(r.weight);
  if (r.kind == "regex" || r.kind == "not_regex") out << YAML::Key << "pattern" << YAML::Value << r.pattern;
  if (r.kind == "contains" || r.kind == "excludes") {
    out << YAML::Key << "words" << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const std::string& w : r.words) out << w;
    out << YAML::EndSeq;
  }
  if (r.kind == "contains" || r.kind == "excludes" || r.kind == "exact_reference") {
    out << YAML::Key << "case_sensitive" << YAML::Value << r.case_sensitive;
    out << YAML::Key << "whole_word" << YAML::Value << r.whole_word;
  }
  if (r.kind == "length") {
    out << YAML::Key << "min_chars" << YAML::Value << r.min_chars;
    out << YAML::Key << "max_chars" << YAML::Value << r.max_chars;
    out << YAML::Key << "penalty_per_char" << YAML::Value << format_double(r.penalty_per_char);
  }
  out << YAML::EndMap;
}

// A reward with the fields its type uses. The http token is never written (config.yaml may be shared);
// token_env names the variable instead.
void emit_reward(YAML::Emitter& out, const RewardSpec& r, bool top_level) {
  out << YAML::BeginMap;
  out << YAML::Key << "type" << YAML::Value << (r.type ? to_string(*r.type) : "");
  if (!top_level) out << YAML::Key << "weight" << YAML::Value << format_double(r.weight);
  if (r.type == RewardType::kModel) {
    out << YAML::Key << (r.stage.empty() ? "path" : "stage") << YAML::Value << (r.stage.empty() ? r.path : r.stage);
    out << YAML::Key << "batch_size" << YAML::Value << r.batch_size;
  } else if (r.type == RewardType::kRules) {
    out << YAML::Key << "rules" << YAML::Value << YAML::BeginSeq;
    for (const RuleConfig& rule : r.rules) emit_rule(out, rule);
    out << YAML::EndSeq;
  } else if (r.type == RewardType::kHttp) {
    const HttpRewardConfig& h = r.http;
    out << YAML::Key << "url" << YAML::Value << h.url;
    out << YAML::Key << "timeout_s" << YAML::Value << format_double(h.timeout_s);
    out << YAML::Key << "connect_timeout_s" << YAML::Value << format_double(h.connect_timeout_s);
    out << YAML::Key << "retries" << YAML::Value << h.retries;
    out << YAML::Key << "backoff_s" << YAML::Value << format_double(h.backoff_s);
    out << YAML::Key << "batch_size" << YAML::Value << h.batch_size;
    if (!r.token_env.empty()) out << YAML::Key << "token_env" << YAML::Value << r.token_env;
  } else if (r.type == RewardType::kSum) {
    out << YAML::Key << "parts" << YAML::Value << YAML::BeginSeq;
    for (const RewardSpec& part : r.parts) emit_reward(out, part, false);
    out << YAML::EndSeq;
  }
  if (top_level) {
    out << YAML::Key << "normalize" << YAML::Value << r.normalize;
    out << YAML::Key << "clip" << YAML::Value << format_double(r.clip);
  }
  out << YAML::EndMap;
}

// The keys of the stage's type, in table order (config.yaml's; other types' keys are left out, so adding a
// key to one type leaves the other types' emitted config, and stage hash, as it was).
void emit_stage(YAML::Emitter& out, const StageConfig& s) {
  out << YAML::BeginMap;
  for (const Field<StageConfig>& f : stage_fields()) {
    if (!f.takes(s.type)) continue;
    if (f.kind != Kind::kCustom) {
      emit_field(out, f, s);
    } else {  // the reward
      out << YAML::Key << f.name << YAML::Value;
      emit_reward(out, s.reward, true);
    }
  }
  out << YAML::EndMap;
}

void emit_launch(YAML::Emitter& out, const LaunchSection& l) {
  out << YAML::Key << "launch" << YAML::Value << YAML::BeginMap;
  for (const Field<LaunchSection>& f : launch_fields()) {
    if (f.kind != Kind::kCustom) {
      emit_field(out, f, l);
      continue;
    }
    out << YAML::Key << f.name << YAML::Value << YAML::BeginSeq;  // hosts
    for (const LaunchHost& h : l.hosts)
      out << YAML::Flow << YAML::BeginMap << YAML::Key << "host" << YAML::Value << h.host << YAML::Key << "slots"
          << YAML::Value << h.slots << YAML::EndMap;
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
}

}  // namespace

const StageConfig* PipelineConfig::find_stage(const std::string& name) const {
  for (const StageConfig& s : stages)
    if (s.name == name) return &s;
  return nullptr;
}

std::string to_yaml(const PipelineConfig& config) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const Field<PipelineConfig>& f : top_fields()) emit_field(out, f, config);
  emit_model(out, config.model);
  emit_lora(out, config.lora);
  out << YAML::Key << "stages" << YAML::Value << YAML::BeginSeq;
  for (const StageConfig& s : config.stages) emit_stage(out, s);
  out << YAML::EndSeq;
  if (config.has_launch) emit_launch(out, config.launch);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

// What decides a stage's result: the seed, the model, the adapter shape, the stage's own settings, and
// (through init_from) the settings of every stage it starts from, earliest first. run_dir and threads
// are left out: moving the run or changing the thread count does not make a finished stage stale.
std::string stage_yaml(const PipelineConfig& config, const StageConfig& stage) {
  std::vector<const StageConfig*> chain;  // init_from ancestors, nearest first
  for (const StageConfig* s = config.find_stage(stage.init_from); s != nullptr && chain.size() < config.stages.size();
       s = config.find_stage(s->init_from))
    chain.push_back(s);
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "seed" << YAML::Value << config.seed;
  emit_model(out, config.model);
  emit_lora(out, config.lora);
  out << YAML::Key << "stage" << YAML::Value;
  emit_stage(out, stage);
  if (!chain.empty()) {
    out << YAML::Key << "init_from_stages" << YAML::Value << YAML::BeginSeq;
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) emit_stage(out, **it);
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace reglage::config
