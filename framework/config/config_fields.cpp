// The key tables: one row per YAML key, in the order config.yaml writes them.
//
// Adding a scalar key to a stage type is one row here (plus the member in pipeline_config.h and its use):
//   field("my_key", &StageConfig::my_key, ge(0).le(kMaxSteps), "what it does", kSft | kDpo),
// The reader, the range checks, the emitter (and so the stage hash), --help-config and the README's tables
// follow. Note: a key emitted for a stage type changes that type's stage hash (its finished stages rerun).
#include "framework/config/config_fields.h"

#include <cstdio>
#include <cstdlib>

namespace reglage::config {

namespace {

// Upper bounds of the numeric keys. Generous for real runs, small enough that a typo (an extra zero or ten)
// is refused instead of overflowing a step count or exhausting memory later.
constexpr double kMaxThreads = 1024;            // intra-op threads per rank
constexpr double kMaxLoraRank = 65536;          // also <= min(in, out) of the adapted layers (checked on load)
constexpr double kMaxLoraAlpha = 1e6;
constexpr double kMaxSteps = 1000000000;        // max_steps, warmup_steps, max_iterations, *_every
constexpr double kMaxEpochs = 1000000;
constexpr double kMaxBatch = 1000000;           // batch_size, grad_accum, rollout_batch_size, minibatch_size
constexpr double kMaxSeqLen = 1 << 20;          // max_seq_len, max_new_tokens (tokens)
constexpr double kMaxSamples = 1024;            // samples_per_prompt, group_size
constexpr double kMaxPpoEpochs = 1000;
constexpr double kMaxKeepCheckpoints = 1000;
constexpr double kMaxLayers = 1 << 24;          // freeze_layers (the model's own count is checked on load)
constexpr double kMaxCoef = 1000;               // loss weights and coefficients (kl_coef, vf_coef, beta, ...)
constexpr double kMaxGradNorm = 1e6;
constexpr double kMaxTemperature = 100;
constexpr double kMaxKlHorizon = 1e12;
constexpr double kMaxClip = 1e6;                // clip_range, value_clip_range, kl_target
constexpr double kMaxProcesses = 65536;         // launch.np, launch.hosts[].slots
constexpr double kMaxRestarts = 1000;
constexpr double kMaxSeconds = 7 * 24 * 3600;   // launch durations: a week
const char* const kPeakLr = " (a peak learning rate)";

using T = StageType;
using P = PpoSettings;
using D = DpoSettings;
using G = GrpoSettings;
using S = StageConfig;
constexpr unsigned kRows = kSft | kRm | kDpo;   // the stage types that step through rows of data
constexpr unsigned kRollouts = kPpo | kGrpo;   // the stage types that sample responses
const Hint kPpoIters{T::kPpo, "max_iterations"}, kGrpoIters{T::kGrpo, "max_iterations"};
const Hint kNoCritic{T::kGrpo, "no critic"}, kNoGae{T::kGrpo, "group advantages, no GAE"};
const Hint kGrpoLoss{T::kGrpo, "the clipped objective + beta x k3"};

}  // namespace

const std::vector<Field<PipelineConfig>>& top_fields() {
  using C = PipelineConfig;
  static const std::vector<Field<C>> rows = {
      field("run_dir", &C::run_dir, any_value(), "the directory for this run's outputs (required; created by run)"),
      field("seed", &C::seed, any_value(), "seed of every random stream (an integer >= 0)").read_by_code(),
      field("threads", &C::threads, ge(0).le(kMaxThreads, " (0 = cores / ranks on this host)"),
            "intra-op threads per rank; 0 = cores / ranks on this host"),
  };
  return rows;
}

const std::vector<Field<ModelSection>>& model_fields() {
  using M = ModelSection;
  static const std::vector<Field<M>> rows = {
      field("path", &M::path, any_value(), "llama2.c file, Hugging Face directory or .gguf file (required, must exist)"),
      field("tokenizer", &M::tokenizer, any_value(), "tokenizer file; empty = found beside / inside the model"),
      field("dtype", &M::dtype, any_value(), "weights and compute dtype (bfloat16: fp32 master weights)")
          .one_of({"float32", "bfloat16"}),
      field("storage", &M::storage, any_value(),
            "frozen base weights: auto (= dtype), bfloat16 or int8 (one scale per row); with dtype float32, "
            "computed in float32, LoRA stages only")
          .one_of({"auto", "bfloat16", "int8"}),
  };
  return rows;
}

const std::vector<Field<LoraSection>>& lora_fields() {
  using L = LoraSection;
  static const std::vector<Field<L>> rows = {
      field("rank", &L::rank, gt(0).le(kMaxLoraRank), "adapter rank"),
      field("alpha", &L::alpha, gt(0).le(kMaxLoraAlpha), "scale: the update is alpha / rank x B A"),
      field("dropout", &L::dropout, in(0, 1, "[)"), "dropout on the adapter's input"),
      field("targets", &L::targets, any_value(), "layers that get adapters, or [all-linear]")
          .one_of({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "all-linear"})
          .read_by_code(),
  };
  return rows;
}

const std::vector<Field<StageConfig>>& stage_fields() {
  static const std::vector<Field<S>> rows = {
      field("name", &S::name, any_value(), "unique, [A-Za-z0-9_-]+ (required)"),
      field("type", &S::type, any_value(), "the trainer (required)").read_by_code(),
      field("data", &S::data, any_value(), "training JSONL; for ppo and grpo the prompts (required, must exist)"),
      field("eval_data", &S::eval_data, any_value(), "held-out JSONL (must exist when given)"),
      field("train", &S::train, any_value(), "what the stage trains (dpo, grpo: lora)", kAllStages & ~kPpo,
            {{T::kPpo, "LoRA adapters (train: lora)"}}),
      // grpo's own keys, then the ppo keys (grpo takes those its mask names), in config.yaml's order.
      field("group_size", &S::grpo, &G::group_size,
            ge(2, ": advantages compare the responses of one prompt's group").le(kMaxSamples),
            "responses sampled per prompt (one group)", kGrpo),
      field("beta", &S::grpo, &G::beta, ge(0, "; 0 = no KL term").le(kMaxCoef),
            "weight of the k3 KL-to-reference loss term", kGrpo),
      field("rollout_batch_size", &S::ppo, &P::rollout_batch_size, gt(0).le(kMaxBatch),
            "prompts per iteration, all ranks together", kRollouts),
      field("samples_per_prompt", &S::ppo, &P::samples_per_prompt, gt(0).le(kMaxSamples), "responses per prompt",
            kPpo, {{T::kGrpo, "group_size"}}),
      field("minibatch_size", &S::ppo, &P::minibatch_size, gt(0).le(kMaxBatch),
            "responses per optimizer step; divides the iteration's responses", kRollouts),
      field("ppo_epochs", &S::ppo, &P::ppo_epochs, gt(0).le(kMaxPpoEpochs), "passes over each iteration's rollouts",
            kRollouts),
      field("max_iterations", &S::ppo, &P::max_iterations, gt(0).le(kMaxSteps).unset_if_zero(),
            "iterations (rollout + update) (required)", kRollouts),
      field("max_new_tokens", &S::ppo, &P::max_new_tokens, gt(0).le(kMaxSeqLen), "response length limit", kRollouts),
      field("temperature", &S::ppo, &P::temperature, gt(0).le(kMaxTemperature), "sampling temperature", kRollouts),
      field("top_p", &S::ppo, &P::top_p, in(0, 1, "(]"), "nucleus sampling", kRollouts),
      field("kl_coef", &S::ppo, &P::kl_coef, ge(0).le(kMaxCoef), "initial KL penalty coefficient", kPpo,
            {{T::kGrpo, "beta"}}),
      field("kl_target", &S::ppo, &P::kl_target, ge(0, "; 0 = fixed kl_coef").le(kMaxClip),
            "> 0: adaptive coefficient aiming at this KL per response; 0 = fixed", kPpo, {{T::kGrpo, "a fixed beta"}}),
      field("kl_horizon", &S::ppo, &P::kl_horizon, gt(0).le(kMaxKlHorizon), "adaptive KL horizon, in responses",
            kPpo, {{T::kGrpo, "a fixed beta"}}),
      field("kl_estimator", &S::ppo, &P::kl_estimator, any_value(), "per-token KL estimate against the reference",
            kPpo, {{T::kGrpo, "k3, always"}}),
      field("gamma", &S::ppo, &P::gamma, in(0, 1, "[]"), "GAE discount", kPpo, {kNoGae}),
      field("lam", &S::ppo, &P::lam, in(0, 1, "[]"), "GAE lambda", kPpo, {kNoGae}),
      field("clip_range", &S::ppo, &P::clip_range, gt(0).le(kMaxClip), "policy ratio clipping", kRollouts),
      field("value_clip_range", &S::ppo, &P::value_clip_range, ge(0, "; 0 = off").le(kMaxClip),
            "value clipping around the rollout values; 0 = off", kPpo, {kNoCritic}),
      field("vf_coef", &S::ppo, &P::vf_coef, gt(0).le(kMaxCoef), "weight of the value loss (critic)", kPpo,
            {kNoCritic}),
      field("entropy_coef", &S::ppo, &P::entropy_coef, ge(0).le(kMaxCoef), "entropy bonus", kRollouts),
      field("actor_lr", &S::ppo, &P::actor_lr, gt(0).le(1.0, kPeakLr), "peak learning rate of the policy",
            kRollouts),
      field("critic_lr", &S::ppo, &P::critic_lr, gt(0).le(1.0, kPeakLr), "peak learning rate of the critic", kPpo,
            {kNoCritic}),
      field("warn_kl", &S::ppo, &P::warn_kl, ge(0, "; 0 = off"),
            "KL per response above this prints a reward-hacking warning; 0 = off", kRollouts),
      field("warn_response_length", &S::ppo, &P::warn_response_length, ge(0, "; 0 = off").le(kMaxSeqLen),
            "mean response tokens above this print a warning; 0 = off", kRollouts),
      // The keys of the stages that step through rows of data.
      field("freeze_layers", &S::freeze_layers, ge(0).le(kMaxLayers),
            "with train: full_freeze_lower, the embedding + first K layers are frozen", kRows,
            {{T::kPpo, "LoRA adapters"}, {T::kGrpo, "a LoRA adapter"}}),
      field("max_steps", &S::max_steps, ge(0).le(kMaxSteps), "optimizer steps; exactly one of max_steps / epochs > 0",
            kRows, {kPpoIters, kGrpoIters}),
      field("epochs", &S::epochs, ge(0).le(kMaxEpochs, " (steps = rows x epochs / batch_size must fit)"),
            "passes over the data (steps = ceil(rows x epochs / batch_size))", kRows, {kPpoIters, kGrpoIters}),
      field("batch_size", &S::batch_size, gt(0).le(kMaxBatch),
            "global rows per optimizer step; divisible by ranks x grad_accum", kRows,
            {{T::kPpo, "rollout_batch_size"}, {T::kGrpo, "rollout_batch_size"}}),
      field("grad_accum", &S::grad_accum, gt(0).le(kMaxBatch), "micro-steps per optimizer step", kRows,
            {{T::kPpo, "minibatch_size"}, {T::kGrpo, "minibatch_size"}}),
      field("lr", &S::lr, gt(0).le(1.0, kPeakLr), "peak learning rate", kRows,
            {{T::kPpo, "actor_lr and critic_lr"}, {T::kGrpo, "actor_lr"}}),
      // Every stage type's optimizer, schedule, cadence and data keys.
      field("weight_decay", &S::weight_decay,
            ge(0).le(1.0, " (decoupled decay shrinks weights by lr x weight_decay per step)"),
            "AdamW decoupled weight decay, on matrices"),
      field("adam_beta1", &S::adam_beta1, in(0, 1, "[)"), "AdamW beta1"),
      field("adam_beta2", &S::adam_beta2, in(0, 1, "[)"), "AdamW beta2"),
      field("adam_eps", &S::adam_eps, gt(0).lt(1, " (it guards a division; typical 1e-8)"), "AdamW epsilon"),
      field("warmup_steps", &S::warmup_steps, ge(0).le(kMaxSteps), "linear warm-up from 0 (steps or iterations)"),
      field("schedule", &S::schedule, any_value(), "decay after warm-up, down to lr x min_lr_ratio"),
      field("min_lr_ratio", &S::min_lr_ratio, in(0, 1, "[]"), "the schedule ends at lr x min_lr_ratio"),
      field("max_grad_norm", &S::max_grad_norm, ge(0, "; 0 = off").le(kMaxGradNorm),
            "clipping by the global norm; 0 = off"),
      field("checkpoint_every", &S::checkpoint_every, ge(0).le(kMaxSteps),
            "steps between checkpoints; 0 = only at the end"),
      field("keep_checkpoints", &S::keep_checkpoints, ge(1).le(kMaxKeepCheckpoints), "newest checkpoints kept"),
      field("eval_every", &S::eval_every, ge(0).le(kMaxSteps),
            "steps between evals on eval_data; 0 = only at the end (when given)"),
      field("log_every", &S::log_every, ge(1).le(kMaxSteps), "steps between train metric lines"),
      field("init_from", &S::init_from, any_value(), "an earlier stage's name: start from its output; empty = the base"),
      field("chat_template", &S::chat_template, any_value(),
            "rows with \"messages\": auto (the model's own), plain, chatml, llama2 or a .jinja file"),
      field("max_seq_len", &S::max_seq_len, ge(0, "; 0 = the model's context").le(kMaxSeqLen),
            "tokens per row; 0 = the model's context"),
      field("truncate", &S::truncate, any_value(), "rows longer than max_seq_len: false = error, true = cut (counted)",
            kRows, {{T::kPpo, "max_seq_len on prompts"}, {T::kGrpo, "max_seq_len on prompts"}}),
      field("skip_bad_rows", &S::skip_bad_rows, any_value(), "malformed rows: false = error, true = skipped (counted)"),
      field("activation_checkpointing", &S::activation_checkpointing, any_value(),
            "recompute each decoder layer in backward: activations of one layer at a time, one more forward"),
      field("packing", &S::packing, any_value(),
            "rows packed into sequences of max_seq_len tokens, attention and positions kept per row", kSft),
      field("reward", &S::reward, any_value(), "the reward to optimise (required; see Rewards)", kRollouts),
      // dpo's own keys, last (config.yaml's order).
      field("beta", &S::dpo, &D::beta, gt(0).le(kMaxCoef), "strength of the implicit KL to the reference", kDpo),
      field("loss", &S::dpo, &D::loss, any_value(), "the preference loss", kDpo, {kGrpoLoss}),
      field("label_smoothing", &S::dpo, &D::label_smoothing, any_value(),
            "cdpo: the assumed share of flipped labels, in (0, 0.5); else 0", kDpo, {kGrpoLoss}),
      field("rpo_alpha", &S::dpo, &D::rpo_alpha, ge(0, " (0 = no NLL term)").le(kMaxCoef),
            "weight of the chosen response's NLL per token added to the loss (RPO); 0 = plain DPO", kDpo,
            {kGrpoLoss}),
  };
  return rows;
}

const std::vector<Field<LaunchSection>>& launch_fields() {
  using L = LaunchSection;
  Bounds startup = gt(0);
  startup.lo_text = "must be finite and > 0";
  static const std::vector<Field<L>> rows = {
      field("hosts", &L::hosts, any_value(), "[{host: NAME, slots: N}, ...]; empty (and no hostfile) = this machine"),
      field("hostfile", &L::hostfile, any_value(), "an Open MPI hostfile instead of hosts"),
      field("np", &L::np, ge(0, "; 0 = the hosts' slots or this machine's cores").le(kMaxProcesses),
            "ranks; 0 = the hosts' slots, or this machine's cores"),
      field("mpirun_args", &L::mpirun_args, any_value(), "passed through to mpirun"),
      field("env", &L::env, any_value(), "variables forwarded to every rank (mpirun -x)"),
      field("max_restarts", &L::max_restarts, ge(0).le(kMaxRestarts), "restarts after a dead or hung rank"),
      field("heartbeat_interval_s", &L::heartbeat_interval_s, gt(0).le(kMaxSeconds), "seconds between heartbeats"),
      field("heartbeat_timeout_s", &L::heartbeat_timeout_s, any_value().le(kMaxSeconds),
            "a rank silent this long is hung; > heartbeat_interval_s"),
      field("heartbeat_host", &L::heartbeat_host, any_value(),
            "where ranks reach the launcher; empty = 127.0.0.1, or this host's name with other hosts"),
      field("startup_timeout_s", &L::startup_timeout_s, startup, "time a rank may take to send its first heartbeat"),
      field("hang_timeout_s", &L::hang_timeout_s, any_value(),
            "a rank whose progress stands still this long while it beats is hung; > heartbeat_interval_s"),
      field("status_port", &L::status_port, in(0, 65535, "[]", "; 0 = off"), "HTTP /status and /metrics; 0 = off"),
      field("status_host", &L::status_host, any_value(), "address the status server binds"),
  };
  return rows;
}

std::string format_double(double v) {
  char buf[40];
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

template <typename Sec>
std::string field_text(const Field<Sec>& f, const Sec& s) {
  switch (f.kind) {
    case Kind::kInt: return std::to_string(f.template get<int64_t>(s));
    case Kind::kUint: return std::to_string(f.template get<uint64_t>(s));
    case Kind::kDouble: return format_double(f.template get<double>(s));
    case Kind::kBool: return f.template get<bool>(s) ? "true" : "false";
    case Kind::kString: return f.template get<std::string>(s);
    case Kind::kChoice: return f.choice_name(f.at(const_cast<Sec&>(s)));
    case Kind::kStrings: {
      std::string out;
      for (const std::string& item : f.template get<std::vector<std::string>>(s)) out += (out.empty() ? "" : ", ") + item;
      return "[" + out + "]";
    }
    case Kind::kCustom: break;
  }
  return "";
}

template <typename Sec>
std::string field_type_name(const Field<Sec>& f) {
  auto bar = [](const std::vector<std::string>& names) {
    std::string out;
    for (const std::string& n : names) out += (out.empty() ? "" : " | ") + n;
    return out;
  };
  switch (f.kind) {
    case Kind::kInt: return "integer";
    case Kind::kUint: return "integer >= 0";
    case Kind::kDouble: return "number";
    case Kind::kBool: return "true | false";
    case Kind::kString: return f.choices.empty() ? "string" : bar(f.choices);
    case Kind::kChoice: return bar(f.choices);
    case Kind::kStrings: return f.choices.empty() ? "list of strings" : "list of " + bar(f.choices);
    case Kind::kCustom: break;
  }
  return std::string(f.name) == "reward" ? "mapping" : "list of {host, slots}";
}

#define REGLAGE_INSTANTIATE(Sec)                                    \
  template std::string field_text(const Field<Sec>&, const Sec&); \
  template std::string field_type_name(const Field<Sec>&);
REGLAGE_INSTANTIATE(PipelineConfig)
REGLAGE_INSTANTIATE(ModelSection)
REGLAGE_INSTANTIATE(LoraSection)
REGLAGE_INSTANTIATE(StageConfig)
REGLAGE_INSTANTIATE(LaunchSection)
#undef REGLAGE_INSTANTIATE

std::string stage_list(unsigned mask) {
  std::vector<std::string> names;
  for (const Choice<StageType>& c : ChoiceTable<StageType>::entries)
    if (mask & stage_bit(c.value)) names.push_back(c.name);
  std::string out;
  for (size_t i = 0; i < names.size(); ++i)
    out += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + names[i];
  return out;
}

}  // namespace reglage::config
