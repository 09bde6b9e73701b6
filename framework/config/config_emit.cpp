// Writing a resolved pipeline back as YAML: the whole config (run_dir/config.yaml) and one stage's
// settings (hashed to decide whether a finished stage must run again).
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <cstdlib>

#include "framework/config/pipeline_config.h"

namespace reglage::config {

namespace {

// The shortest decimal text that reads back as exactly `v`.
std::string format_double(double v) {
  char buf[40];
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

void emit_model(YAML::Emitter& out, const ModelSection& m) {
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "path" << YAML::Value << m.path;
  out << YAML::Key << "tokenizer" << YAML::Value << m.tokenizer;
  out << YAML::Key << "dtype" << YAML::Value << m.dtype;
  out << YAML::EndMap;
}

void emit_lora(YAML::Emitter& out, const LoraSection& l) {
  out << YAML::Key << "lora" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "rank" << YAML::Value << l.rank;
  out << YAML::Key << "alpha" << YAML::Value << format_double(l.alpha);
  out << YAML::Key << "dropout" << YAML::Value << format_double(l.dropout);
  out << YAML::Key << "targets" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const std::string& t : l.targets) out << t;
  out << YAML::EndSeq << YAML::EndMap;
}

// Every StageConfig field, in declaration order, as one mapping.
void emit_stage(YAML::Emitter& out, const StageConfig& s) {
  auto str = [&](const char* k, const std::string& v) { out << YAML::Key << k << YAML::Value << v; };
  auto num = [&](const char* k, int64_t v) { out << YAML::Key << k << YAML::Value << v; };
  auto real = [&](const char* k, double v) { out << YAML::Key << k << YAML::Value << format_double(v); };
  auto flag = [&](const char* k, bool v) { out << YAML::Key << k << YAML::Value << v; };
  out << YAML::BeginMap;
  str("name", s.name);
  str("type", s.type);
  str("data", s.data);
  str("eval_data", s.eval_data);
  str("train", s.train);
  num("freeze_layers", s.freeze_layers);
  num("max_steps", s.max_steps);
  num("epochs", s.epochs);
  num("batch_size", s.batch_size);
  num("grad_accum", s.grad_accum);
  real("lr", s.lr);
  real("weight_decay", s.weight_decay);
  real("adam_beta1", s.adam_beta1);
  real("adam_beta2", s.adam_beta2);
  real("adam_eps", s.adam_eps);
  num("warmup_steps", s.warmup_steps);
  str("schedule", s.schedule);
  real("min_lr_ratio", s.min_lr_ratio);
  real("max_grad_norm", s.max_grad_norm);
  num("checkpoint_every", s.checkpoint_every);
  num("keep_checkpoints", s.keep_checkpoints);
  num("eval_every", s.eval_every);
  num("log_every", s.log_every);
  str("init_from", s.init_from);
  str("chat_template", s.chat_template);
  num("max_seq_len", s.max_seq_len);
  flag("truncate", s.truncate);
  flag("skip_bad_rows", s.skip_bad_rows);
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
  out << YAML::Key << "run_dir" << YAML::Value << config.run_dir;
  out << YAML::Key << "seed" << YAML::Value << config.seed;
  out << YAML::Key << "threads" << YAML::Value << config.threads;
  emit_model(out, config.model);
  emit_lora(out, config.lora);
  out << YAML::Key << "stages" << YAML::Value << YAML::BeginSeq;
  for (const StageConfig& s : config.stages) emit_stage(out, s);
  out << YAML::EndSeq << YAML::EndMap;
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
