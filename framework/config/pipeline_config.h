// The pipeline a user writes in YAML, as typed structs with their defaults. Only config/ sees yaml-cpp;
// trainers receive these structs.
//   run_dir: runs/demo
//   seed: 1234
//   threads: 0
//   model: {path: models/stories260K/stories260K.bin, tokenizer: ..., dtype: float32}
//   lora: {rank: 8, alpha: 16, dropout: 0.0, targets: [q_proj, k_proj, v_proj, o_proj]}
//   stages:
//     - {name: sft, type: sft, data: data/sft_train.jsonl, max_steps: 200, batch_size: 16, ...}
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "framework/config/choices.h"
#include "framework/config/reward_config.h"

namespace reglage::config {

struct ModelSection {
  std::string path;                 // llama2.c file or Hugging Face directory (required, must exist)
  std::string tokenizer;            // optional; default: found beside / inside the model
  std::string dtype = "float32";    // float32 | bfloat16
  std::string storage = "auto";     // frozen base weights: auto (= dtype) | bfloat16 | int8 (float32 compute)
};

struct LoraSection {
  int64_t rank = 8;                 // > 0
  double alpha = 16.0;              // > 0
  double dropout = 0.0;             // [0, 1)
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj"};  // or [all-linear]
};

// The settings only ppo stages have (written flat in the stage, like the common ones); grpo stages share
// some of them (GrpoSettings lists which). Counts are global: across all ranks.
struct PpoSettings {
  int64_t rollout_batch_size = 32;  // prompts per iteration; x samples_per_prompt divisible by world size
  int64_t samples_per_prompt = 1;   // responses sampled per prompt
  int64_t minibatch_size = 16;      // responses per optimizer step; divides rollout_batch_size x samples
  int64_t ppo_epochs = 1;           // passes over each iteration's rollouts
  int64_t max_iterations = 0;       // iterations (rollout + update), > 0 (required)
  int64_t max_new_tokens = 64;      // response length limit
  double temperature = 1.0;         // sampling, > 0
  double top_p = 1.0;               // nucleus sampling, (0, 1]
  double kl_coef = 0.05;            // initial KL penalty coefficient, >= 0
  double kl_target = 0.0;           // > 0: adaptive coefficient aiming at this KL per sequence; 0 = fixed
  double kl_horizon = 10000;        // adaptive KL horizon in responses, > 0
  KlEstimator kl_estimator = KlEstimator::kK1;  // k1 | k3: per-token KL estimate against the reference
  double gamma = 1.0;               // GAE discount, [0, 1]
  double lam = 0.95;                // GAE lambda, [0, 1]
  double clip_range = 0.2;          // policy ratio clipping, > 0
  double value_clip_range = 0.2;    // value clipping around the rollout values; 0 = off
  double vf_coef = 0.5;             // weight of the value loss (critic), > 0
  double entropy_coef = 0.0;        // entropy bonus, >= 0
  double actor_lr = 1e-4;           // peak learning rates, > 0
  double critic_lr = 1e-4;
  double warn_kl = 0.0;             // KL per sequence above this prints a reward-hacking warning; 0 = off
  int64_t warn_response_length = 0; // mean response tokens above this prints a warning; 0 = off
};

// The settings only dpo stages have (flat in the stage). The reference policy is the model with the stage's
// LoRA adapter off, so dpo stages train a LoRA adapter.
struct DpoSettings {
  double beta = 0.1;                // strength of the implicit KL to the reference, > 0
  LossType loss = LossType::kSigmoid;  // sigmoid (DPO) | ipo | cdpo
  double label_smoothing = 0.0;     // cdpo: the assumed share of flipped labels, in (0, 0.5); else 0
  double rpo_alpha = 0.0;           // weight of the chosen response's per-token NLL added to the loss
                                    // (RPO, Pang et al. 2024; TRL's rpo_alpha), >= 0; 0 = plain DPO
};

// The settings only grpo stages have (flat in the stage). GRPO has no critic: each prompt gets a group of
// responses, and a response's advantage is its reward standardised within its group. grpo stages also take
// these ppo keys, with the same meaning and defaults (PpoSettings): rollout_batch_size (prompts per
// iteration, divisible by the world size so a group never spans ranks), minibatch_size (responses per
// optimizer step), ppo_epochs, max_iterations, max_new_tokens, temperature, top_p, clip_range, entropy_coef,
// actor_lr, warn_kl, warn_response_length. The reference policy is the model with the stage's LoRA adapter
// off, so grpo stages train a LoRA adapter.
struct GrpoSettings {
  int64_t group_size = 8;           // responses sampled per prompt (one group), >= 2
  double beta = 0.04;               // weight of the k3 KL-to-reference loss term, >= 0 (0 = no KL term)
};

struct StageConfig {
  std::string name;                 // unique, [A-Za-z0-9_-]+ (required)
  StageType type = StageType::kSft; // sft | reward_model | ppo | dpo | grpo (required)
  std::string data;                 // training JSONL; for ppo and grpo the prompts (required, must exist)
  std::string eval_data;            // optional held-out JSONL (must exist when given)
  TrainMode train = TrainMode::kLora;  // lora | full | full_freeze_lower
  int64_t freeze_layers = 0;        // with full_freeze_lower: embedding + first K layers frozen
  int64_t max_steps = 0;            // optimizer steps; exactly one of max_steps / epochs is > 0
  int64_t epochs = 0;               // passes over the data (steps = ceil(rows * epochs / batch_size))
  int64_t batch_size = 16;          // global rows per optimizer step, across all ranks and micro-steps
  int64_t grad_accum = 1;           // micro-steps per optimizer step; batch_size % (ranks * grad_accum) == 0
  double lr = 3e-4;                 // peak learning rate, > 0
  double weight_decay = 0.0;        // AdamW decoupled weight decay, >= 0
  double adam_beta1 = 0.9;          // [0, 1)
  double adam_beta2 = 0.999;        // [0, 1)
  double adam_eps = 1e-8;           // > 0
  int64_t warmup_steps = 0;         // linear warm-up from 0, >= 0
  Schedule schedule = Schedule::kCosine;  // cosine | linear | constant (after warm-up)
  double min_lr_ratio = 0.0;        // the schedule ends at lr * min_lr_ratio, [0, 1]
  double max_grad_norm = 1.0;       // clip by global norm; 0 = off
  int64_t checkpoint_every = 0;     // steps between checkpoints; 0 = only at the end
  int64_t keep_checkpoints = 2;     // newest kept, >= 1
  int64_t eval_every = 0;           // steps between evals on eval_data; 0 = only at the end (when given)
  int64_t log_every = 1;            // steps between train metric lines, >= 1
  std::string init_from;            // an earlier stage's name: start from its output; empty = the base
  std::string chat_template = "auto";   // rows with "messages": auto | plain | chatml | llama2 | path.jinja
  int64_t max_seq_len = 0;          // tokens per row; 0 = the model's context
  bool truncate = false;            // rows longer than max_seq_len: false = error, true = cut (counted)
  bool skip_bad_rows = false;       // malformed rows: false = error, true = skipped (counted)
  bool activation_checkpointing = false;  // recompute each decoder layer in backward (less memory)
  bool packing = false;             // sft: rows packed into max_seq_len sequences, attention kept per row
  RewardSpec reward;                // ppo, grpo: the reward (required); other types: absent
  PpoSettings ppo;                  // ppo; grpo uses the keys GrpoSettings lists
  DpoSettings dpo;                  // dpo only
  GrpoSettings grpo;                // grpo only
};

// How `reglage launch` starts the pipeline (ignored by `reglage run`).
struct LaunchHost {
  std::string host;
  int64_t slots = 1;
};
struct LaunchSection {
  std::vector<LaunchHost> hosts;           // empty (and no hostfile) = this machine
  std::string hostfile;                    // an Open MPI hostfile instead of hosts
  int64_t np = 0;                          // ranks; 0 = the hosts' slots, or this machine's cores
  std::vector<std::string> mpirun_args;    // passed through to mpirun
  std::vector<std::string> env;            // variables forwarded to every rank (mpirun -x)
  int64_t max_restarts = 3;                // restarts after a dead or hung rank
  double heartbeat_interval_s = 5;         // > 0
  double heartbeat_timeout_s = 60;         // a rank silent this long is hung; > heartbeat_interval_s
  double startup_timeout_s = 600;          // time a rank may take to send its first heartbeat (start-up:
                                           // loading LibTorch and MPI from a shared file system); > 0
  double hang_timeout_s = 1800;            // a rank whose progress (stage, step or operation) stands still
                                           // this long while it beats is hung; > heartbeat_interval_s. Long:
                                           // one operation (a checkpoint of a large model to a shared file
                                           // system, a long generation or eval pass) can take many minutes
  std::string heartbeat_host = "";         // where ranks reach the launcher; "" = 127.0.0.1, or this
                                           // host's name when hosts/hostfile name other machines
  int64_t status_port = 8470;              // HTTP /status and /metrics; 0 = off
  std::string status_host = "127.0.0.1";   // address the status server binds
};

// Where each key of a loaded config is written (0-based line and column, as yaml-cpp counts), its text and
// the overrides that set keys, kept so that checks made after loading (check_world_size, prepare_run_dir)
// point at the same place as the loader's own.
struct ConfigPlace {
  int line = -1;                    // -1: unknown
  int column = -1;
};
struct ConfigPlaces {
  std::map<std::string, ConfigPlace> keys;       // "stages[0].batch_size" -> where its value is
  std::map<std::string, ConfigPlace> sections;   // "stages[0]" -> where the section starts
  std::map<std::string, std::string> texts;      // key -> the value as written
  std::vector<std::pair<std::string, std::string>> overrides;  // resolved key -> override text
};

struct PipelineConfig {
  std::string source;               // the YAML file it came from
  std::string run_dir;              // required; created if missing; must be writable
  uint64_t seed = 1234;
  int64_t threads = 0;              // intra-op threads per rank; 0 = cores / ranks on this host
  ModelSection model;
  LoraSection lora;
  std::vector<StageConfig> stages;  // at least one
  LaunchSection launch;             // the optional `launch:` section
  bool has_launch = false;          // the file has a `launch:` section
  ConfigPlaces places;              // where each key is written (for later checks' messages)

  const StageConfig* find_stage(const std::string& name) const;
};

// One problem found in a config, located in its YAML file.
struct ConfigProblem {
  int line = 0;                     // 1-based; 0 when unknown (e.g. an override)
  int column = 0;                   // 1-based
  std::string key;                  // e.g. "stages[0].lr"
  std::string message;              // e.g. "-0.1 (must be > 0)"
};

// Thrown with every problem found: what() is one line per problem, "file:line:col: key: message".
class ConfigError;

// Reads `path`, applies `overrides` ("stages.sft.lr=1e-4", "seed=7", "model.dtype=bfloat16": a stage is
// addressed by name), converts to structs and validates everything that needs neither the world size nor
// the file system beyond reading: unknown keys (with the closest valid key suggested), wrong types,
// out-of-range values, missing files, init_from naming a later or unknown stage, duplicate stage names, an
// unknown stage type. Creates nothing. Relative paths in the file are taken relative to the current
// directory. Throws ConfigError listing all problems.
// Commands that only read a finished run (export, eval) pass DataFiles::may_be_missing: the stages' data and
// eval_data files need not exist any more (the model must).
enum class DataFiles { must_exist, may_be_missing };
PipelineConfig load_pipeline(const std::string& path, const std::vector<std::string>& overrides,
                             DataFiles data_files = DataFiles::must_exist);

// The checks that need the number of ranks: a global batch divisible by world_size x grad_accum, rollouts and
// minibatches divisible by world_size. Throws ConfigError (positions as load_pipeline's) listing all problems.
void check_world_size(const PipelineConfig& config, int world_size);

// Creates run_dir when missing and proves it writable with a probe file that is removed again. Throws
// ConfigError ("run_dir = X (cannot create it: ...)" at run_dir's position) when it cannot.
void prepare_run_dir(const PipelineConfig& config);

// `reglage run --help-config`: every key of every section with its type, default, range or choices, stage
// types and help; markdown = the README's key tables.
std::string help_config(bool markdown);

// The resolved config (defaults filled in, overrides applied) as YAML, for run_dir/config.yaml.
std::string to_yaml(const PipelineConfig& config);

// The YAML of one stage's settings; its hash decides whether a finished stage's config changed.
std::string stage_yaml(const PipelineConfig& config, const StageConfig& stage);

}  // namespace reglage::config
