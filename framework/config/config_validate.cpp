// Checking a read pipeline: every key's range from its table row, then the rules that tie keys together
// (max_steps xor epochs, label_smoothing with cdpo, minibatches dividing rollouts, init_from order, ...).
// The checks that need the world size or touch the file system run later, where those are known
// (check_world_size, prepare_run_dir), with the positions the loader kept.
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "framework/chat/chat_setting.h"
#include "framework/config/config_error.h"
#include "framework/config/config_loader.h"

namespace reglage::config {

namespace detail {

namespace {

bool holds(Bounds::Op op, double v, double bound) {
  switch (op) {
    case Bounds::kGt: return v > bound;
    case Bounds::kGe: return v >= bound;
    case Bounds::kLt: return v < bound;
    case Bounds::kLe: return v <= bound;
    case Bounds::kNone: break;
  }
  return true;
}

const char* op_text(Bounds::Op op) {
  switch (op) {
    case Bounds::kGt: return "> ";
    case Bounds::kGe: return ">= ";
    case Bounds::kLt: return "< ";
    case Bounds::kLe: return "<= ";
    case Bounds::kNone: break;
  }
  return "";
}

}  // namespace

// The range of every key of `fields` that `stage_mask` takes; string keys with a fixed set, their choice.
template <typename S>
void Loader::check_bounds(const std::string& prefix, const std::vector<Field<S>>& fields, const S& s,
                          unsigned stage_mask) {
  for (const Field<S>& f : fields) {
    if ((f.stages & stage_mask) == 0) continue;
    const std::string key = child_key(prefix, f.name);
    if (f.kind == Kind::kString && !f.choices.empty()) check_choice(key, f.template get<std::string>(s), f.choices);
    if (!f.bounds.any() || (f.kind != Kind::kInt && f.kind != Kind::kDouble)) continue;
    const Bounds& b = f.bounds;
    const bool integer = f.kind == Kind::kInt;
    const double v = integer ? double(f.template get<int64_t>(s)) : f.template get<double>(s);
    // Integers print their bounds in full (1000000000), numbers as streams do (1e+06).
    const auto bound = [&](double x) {
      if (integer) return std::to_string(int64_t(x));
      std::ostringstream out;
      out << x;
      return out.str();
    };
    const auto report = [&](bool ok, const std::string& requirement) {
      if (integer) check(key, ok, f.template get<int64_t>(s), requirement);
      else check(key, ok, f.template get<double>(s), requirement);
    };
    if (b.interval) {
      report(holds(b.lo_op, v, b.lo) && holds(b.hi_op, v, b.hi),
             "must be in " + std::string(b.lo_op == Bounds::kGe ? "[" : "(") + bound(b.lo) + ", " + bound(b.hi) +
                 (b.hi_op == Bounds::kLe ? "]" : ")") + b.lo_note);
      continue;
    }
    if (b.lo_op != Bounds::kNone && !(b.zero_unset && v == 0))
      report(holds(b.lo_op, v, b.lo), b.lo_text.empty() ? "must be " + std::string(op_text(b.lo_op)) + bound(b.lo) + b.lo_note
                                                        : b.lo_text);
    if (b.hi_op != Bounds::kNone)
      report(holds(b.hi_op, v, b.hi), "must be " + std::string(op_text(b.hi_op)) + bound(b.hi) + b.hi_note);
  }
}

void Loader::validate(const PipelineConfig& c) {
  check_bounds("", top_fields(), c);
  check_exists("model.path", c.model.path);
  check_exists("model.tokenizer", c.model.tokenizer);
  check_bounds("model", model_fields(), c.model);
  check("model.storage", c.model.storage != "int8" || c.model.dtype == "float32", c.model.storage,
        "needs model.dtype: float32 (the stored-weight kernels compute in float32)");
  check_bounds("lora", lora_fields(), c.lora);
  if (c.has_launch) validate_launch(c.launch);
  for (size_t i = 0; i < c.stages.size(); ++i) {
    const std::string p = "stages[" + std::to_string(i) + "]";
    if (!stage_bad_.count(p)) validate_stage(c, i, p);
  }
}

void Loader::validate_launch(const LaunchSection& l) {
  check_bounds("launch", launch_fields(), l);
  if (!l.hosts.empty() && !l.hostfile.empty())
    add("launch.hostfile", mark_of("launch.hostfile"), "set only one of hosts and hostfile");
  check_exists("launch.hostfile", l.hostfile);
  check("launch.heartbeat_timeout_s", l.heartbeat_timeout_s > l.heartbeat_interval_s, l.heartbeat_timeout_s,
        "must be > heartbeat_interval_s");
  check("launch.hang_timeout_s", l.hang_timeout_s > l.heartbeat_interval_s, l.hang_timeout_s,
        "must be finite and > heartbeat_interval_s");
}

void Loader::validate_stage(const PipelineConfig& c, size_t index, const std::string& p) {
  const StageConfig& s = c.stages[index];
  auto k = [&](const char* field) { return p + "." + field; };
  auto first_with_name = [&](const std::string& name) {
    size_t i = 0;
    while (i < c.stages.size() && c.stages[i].name != name) ++i;
    return i;
  };
  if (s.name.empty()) {
    if (!bad_.count(k("name"))) add(k("name"), mark_of(k("name")), "required (a unique name for the stage)");
  } else {
    const bool valid = std::all_of(s.name.begin(), s.name.end(), [](char ch) {
      return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-';
    });
    check(k("name"), valid, s.name, "only letters, digits, '_' and '-'");
    const size_t first = first_with_name(s.name);
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
  check(k("chat_template"), chat::is_chat_template_setting(s.chat_template), s.chat_template,
        std::string("expected ") + chat::chat_template_choices());
  if (chat::is_jinja_path(s.chat_template)) check_exists(k("chat_template"), s.chat_template);

  const unsigned mask = stage_mask(type);
  check_bounds(p, stage_fields(), s, mask);
  check(k("freeze_layers"), s.freeze_layers <= 0 || s.train == TrainMode::kFullFreezeLower, s.freeze_layers,
        "only with train: full_freeze_lower");
  // Weight-only storage (the base stored apart from the compute dtype) keeps the base frozen.
  const bool weight_only = c.model.storage == "int8" || (c.model.storage == "bfloat16" && c.model.dtype == "float32");
  check(k("train"), s.train == TrainMode::kLora || !weight_only, to_string(s.train),
        "model.storage = " + c.model.storage + " keeps the base frozen: use train: lora");
  if ((mask & (kSft | kRm | kDpo)) && s.max_steps >= 0 && s.epochs >= 0 && !bad_.count(k("max_steps")) &&
      !bad_.count(k("epochs"))) {
    if (s.max_steps > 0 && s.epochs > 0)
      check(k("epochs"), false, s.epochs, "set only one of max_steps and epochs; max_steps is " + std::to_string(s.max_steps));
    if (s.max_steps == 0 && s.epochs == 0)
      add(k("max_steps"), mark_of(k("max_steps")), "required: exactly one of max_steps and epochs must be > 0");
  }
  if (!s.init_from.empty()) {
    const size_t from = first_with_name(s.init_from);
    if (from == c.stages.size()) {
      std::vector<std::string> names;
      for (const StageConfig& st : c.stages) names.push_back(st.name);
      check(k("init_from"), false, s.init_from, "no stage has this name; stages: " + join(names, ", "));
    } else if (from == index) {
      check(k("init_from"), false, s.init_from, "a stage cannot start from itself");
    } else {
      check(k("init_from"), from < index, s.init_from,
            "stage '" + s.init_from + "' comes later (stages[" + std::to_string(from) +
                "]); init_from must name an earlier stage");
    }
  }
  if (type == StageType::kDpo) {
    const DpoSettings& o = s.dpo;
    if (o.loss == LossType::kCdpo)
      check(k("label_smoothing"), o.label_smoothing > 0 && o.label_smoothing < 0.5, o.label_smoothing,
            "must be in (0, 0.5) with loss: cdpo");
    else
      check(k("label_smoothing"), o.label_smoothing == 0, o.label_smoothing,
            "only loss: cdpo uses it (this stage's loss is " + std::string(to_string(o.loss)) + ")");
    check(k("train"), s.train == TrainMode::kLora, to_string(s.train),
          "dpo stages train a LoRA adapter: the reference policy is the model with the adapter off");
  }
  if (type == StageType::kPpo || type == StageType::kGrpo) {
    validate_rollouts(s, p, *type);
    validate_reward_stages(*this, s.reward, p + ".reward", &c, index);
  }
}

// ppo and grpo: iterations and a reward are required; minibatches divide an iteration's responses.
void Loader::validate_rollouts(const StageConfig& s, const std::string& p, StageType type) {
  auto k = [&](const char* field) { return p + "." + field; };
  const PpoSettings& o = s.ppo;
  const bool grpo = type == StageType::kGrpo;
  if (o.max_iterations == 0 && !bad_.count(k("max_iterations")))
    add(k("max_iterations"), mark_of(k("max_iterations")),
        std::string("required: the number of ") + (grpo ? "GRPO" : "PPO") + " iterations, > 0");
  if (text_of(k("reward.type")).empty() && !bad_.count(k("reward")))
    add(k("reward"), mark_of(k("reward")),
        std::string("required: the reward to optimise, e.g. ") +
            (grpo ? "{type: rules, rules: [...]}" : "{type: model, stage: rm}"));
  if (grpo) {
    check(k("train"), s.train == TrainMode::kLora, to_string(s.train),
          "grpo stages train a LoRA adapter: the reference policy is the model with the adapter off");
    const int64_t responses = o.rollout_batch_size * s.grpo.group_size;
    if (o.minibatch_size > 0 && o.rollout_batch_size > 0 && s.grpo.group_size >= 2)
      check(k("minibatch_size"), responses % o.minibatch_size == 0, o.minibatch_size,
            "must divide rollout_batch_size x group_size = " + std::to_string(responses));
  } else {
    const int64_t responses = o.rollout_batch_size * o.samples_per_prompt;
    if (o.minibatch_size > 0 && o.rollout_batch_size > 0 && o.samples_per_prompt > 0)
      check(k("minibatch_size"), responses % o.minibatch_size == 0, o.minibatch_size,
            "must divide rollout_batch_size x samples_per_prompt = " + std::to_string(responses));
  }
}

// A global batch splits evenly over the ranks (and micro-steps); an iteration's prompts and responses too.
void Loader::check_world_size(const PipelineConfig& c, int world_size) {
  const std::string w = std::to_string(world_size);
  for (size_t i = 0; i < c.stages.size(); ++i) {
    const StageConfig& s = c.stages[i];
    const std::string p = "stages[" + std::to_string(i) + "]";
    auto k = [&](const char* field) { return p + "." + field; };
    const PpoSettings& o = s.ppo;
    if (s.type == StageType::kPpo || s.type == StageType::kGrpo) {
      if (s.type == StageType::kPpo) {
        const int64_t responses = o.rollout_batch_size * o.samples_per_prompt;
        check(k("rollout_batch_size"), responses % world_size == 0, o.rollout_batch_size,
              "rollout_batch_size x samples_per_prompt = " + std::to_string(responses) +
                  " must be divisible by world size " + w);
      } else {
        check(k("rollout_batch_size"), o.rollout_batch_size % world_size == 0, o.rollout_batch_size,
              "must be divisible by world size " + w + " (prompts per iteration; a prompt's group stays on one rank)");
      }
      check(k("minibatch_size"), o.minibatch_size % world_size == 0, o.minibatch_size,
            "must be divisible by world size " + w);
    } else {
      const int64_t per_step = int64_t(world_size) * s.grad_accum;
      check(k("batch_size"), s.batch_size % per_step == 0, s.batch_size,
            "must be divisible by world size " + w + " x grad_accum " + std::to_string(s.grad_accum) + " = " +
                std::to_string(per_step));
    }
  }
}

void Loader::check_run_dir(const std::string& run_dir) {
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

}  // namespace detail

namespace {

// Runs `checks` on a reader that knows the config's key positions; throws their problems together.
template <typename Checks>
void run_checks(const PipelineConfig& config, Checks checks) {
  detail::Loader r;
  r.restore(config.places);
  checks(r);
  if (r.problems.empty()) return;
  detail::sort_problems(r.problems);
  throw ConfigError(config.source, std::move(r.problems));
}

}  // namespace

void check_world_size(const PipelineConfig& config, int world_size) {
  if (world_size <= 0) return;
  run_checks(config, [&](detail::Loader& r) { r.check_world_size(config, world_size); });
}

void prepare_run_dir(const PipelineConfig& config) {
  run_checks(config, [&](detail::Loader& r) { r.check_run_dir(config.run_dir); });
}

}  // namespace reglage::config
