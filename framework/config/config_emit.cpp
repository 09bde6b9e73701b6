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

void emit_ppo(YAML::Emitter& out, const PpoSettings& o) {
  auto num = [&](const char* k, int64_t v) { out << YAML::Key << k << YAML::Value << v; };
  auto real = [&](const char* k, double v) { out << YAML::Key << k << YAML::Value << format_double(v); };
  num("rollout_batch_size", o.rollout_batch_size);
  num("samples_per_prompt", o.samples_per_prompt);
  num("minibatch_size", o.minibatch_size);
  num("ppo_epochs", o.ppo_epochs);
  num("max_iterations", o.max_iterations);
  num("max_new_tokens", o.max_new_tokens);
  real("temperature", o.temperature);
  real("top_p", o.top_p);
  real("kl_coef", o.kl_coef);
  real("kl_target", o.kl_target);
  real("kl_horizon", o.kl_horizon);
  out << YAML::Key << "kl_estimator" << YAML::Value << to_string(o.kl_estimator);
  real("gamma", o.gamma);
  real("lam", o.lam);
  real("clip_range", o.clip_range);
  real("value_clip_range", o.value_clip_range);
  real("vf_coef", o.vf_coef);
  real("entropy_coef", o.entropy_coef);
  real("actor_lr", o.actor_lr);
  real("critic_lr", o.critic_lr);
  real("warn_kl", o.warn_kl);
  num("warn_response_length", o.warn_response_length);
}

// A grpo stage's settings: its own, then the ppo keys it shares (pipeline_config.h, GrpoSettings).
void emit_grpo(YAML::Emitter& out, const GrpoSettings& g, const PpoSettings& o) {
  auto num = [&](const char* k, int64_t v) { out << YAML::Key << k << YAML::Value << v; };
  auto real = [&](const char* k, double v) { out << YAML::Key << k << YAML::Value << format_double(v); };
  num("group_size", g.group_size);
  real("beta", g.beta);
  num("rollout_batch_size", o.rollout_batch_size);
  num("minibatch_size", o.minibatch_size);
  num("ppo_epochs", o.ppo_epochs);
  num("max_iterations", o.max_iterations);
  num("max_new_tokens", o.max_new_tokens);
  real("temperature", o.temperature);
  real("top_p", o.top_p);
  real("clip_range", o.clip_range);
  real("entropy_coef", o.entropy_coef);
  real("actor_lr", o.actor_lr);
  real("warn_kl", o.warn_kl);
  num("warn_response_length", o.warn_response_length);
}

// Every StageConfig field, in declaration order, as one mapping (ppo stages: their own settings instead of
// the step/batch/lr keys they do not use, grpo stages likewise; dpo stages: theirs at the end).
void emit_stage(YAML::Emitter& out, const StageConfig& s) {
  auto str = [&](const char* k, const std::string& v) { out << YAML::Key << k << YAML::Value << v; };
  auto num = [&](const char* k, int64_t v) { out << YAML::Key << k << YAML::Value << v; };
  auto real = [&](const char* k, double v) { out << YAML::Key << k << YAML::Value << format_double(v); };
  auto flag = [&](const char* k, bool v) { out << YAML::Key << k << YAML::Value << v; };
  out << YAML::BeginMap;
  str("name", s.name);
  str("type", to_string(s.type));
  str("data", s.data);
  str("eval_data", s.eval_data);
  if (s.type == StageType::kPpo) {
    emit_ppo(out, s.ppo);
  } else if (s.type == StageType::kGrpo) {
    str("train", to_string(s.train));
    emit_grpo(out, s.grpo, s.ppo);
  } else {
    str("train", to_string(s.train));
    num("freeze_layers", s.freeze_layers);
    num("max_steps", s.max_steps);
    num("epochs", s.epochs);
    num("batch_size", s.batch_size);
    num("grad_accum", s.grad_accum);
    real("lr", s.lr);
  }
  real("weight_decay", s.weight_decay);
  real("adam_beta1", s.adam_beta1);
  real("adam_beta2", s.adam_beta2);
  real("adam_eps", s.adam_eps);
  num("warmup_steps", s.warmup_steps);
  str("schedule", to_string(s.schedule));
  real("min_lr_ratio", s.min_lr_ratio);
  real("max_grad_norm", s.max_grad_norm);
  num("checkpoint_every", s.checkpoint_every);
  num("keep_checkpoints", s.keep_checkpoints);
  num("eval_every", s.eval_every);
  num("log_every", s.log_every);
  str("init_from", s.init_from);
  str("chat_template", s.chat_template);
  num("max_seq_len", s.max_seq_len);
  if (s.type != StageType::kPpo && s.type != StageType::kGrpo) flag("truncate", s.truncate);
  flag("skip_bad_rows", s.skip_bad_rows);
  if (s.type == StageType::kPpo || s.type == StageType::kGrpo) {
    out << YAML::Key << "reward" << YAML::Value;
    emit_reward(out, s.reward, true);
  }
  if (s.type == StageType::kDpo) {  // only dpo stages: the other stages' emitted config (and hash) stays as it was
    real("beta", s.dpo.beta);
    str("loss", to_string(s.dpo.loss));
    real("label_smoothing", s.dpo.label_smoothing);
    real("rpo_alpha", s.dpo.rpo_alpha);
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
  out << YAML::Key << "run_dir" << YAML::Value << config.run_dir;
  out << YAML::Key << "seed" << YAML::Value << config.seed;
  out << YAML::Key << "threads" << YAML::Value << config.threads;
  emit_model(out, config.model);
  emit_lora(out, config.lora);
  out << YAML::Key << "stages" << YAML::Value << YAML::BeginSeq;
  for (const StageConfig& s : config.stages) emit_stage(out, s);
  out << YAML::EndSeq;
  if (config.has_launch) {
    const LaunchSection& l = config.launch;
    out << YAML::Key << "launch" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "hosts" << YAML::Value << YAML::BeginSeq;
    for (const LaunchHost& h : l.hosts)
      out << YAML::Flow << YAML::BeginMap << YAML::Key << "host" << YAML::Value << h.host << YAML::Key << "slots"
          << YAML::Value << h.slots << YAML::EndMap;
    out << YAML::EndSeq;
    out << YAML::Key << "hostfile" << YAML::Value << l.hostfile;
    out << YAML::Key << "np" << YAML::Value << l.np;
    out << YAML::Key << "mpirun_args" << YAML::Value << YAML::Flow << l.mpirun_args;
    out << YAML::Key << "env" << YAML::Value << YAML::Flow << l.env;
    out << YAML::Key << "max_restarts" << YAML::Value << l.max_restarts;
    out << YAML::Key << "heartbeat_interval_s" << YAML::Value << format_double(l.heartbeat_interval_s);
    out << YAML::Key << "heartbeat_timeout_s" << YAML::Value << format_double(l.heartbeat_timeout_s);
    out << YAML::Key << "heartbeat_host" << YAML::Value << l.heartbeat_host;
    out << YAML::Key << "startup_timeout_s" << YAML::Value << format_double(l.startup_timeout_s);
    out << YAML::Key << "hang_timeout_s" << YAML::Value << format_double(l.hang_timeout_s);
    out << YAML::Key << "status_port" << YAML::Value << l.status_port;
    out << YAML::Key << "status_host" << YAML::Value << l.status_host;
    out << YAML::EndMap;
  }
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
