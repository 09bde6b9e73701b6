// The reward a reinforcement stage optimises, as typed structs: a learned reward model, rules, a remote
// HTTP service, or a weighted sum of those, with optional normalisation and clipping. reward/ builds a
// RewardSource from a RewardSpec (reward/reward_factory.h).
//   reward: {type: model, stage: rm}                      # a reward_model stage of this pipeline
//   reward: {type: model, path: runs/x/rm/final}          # or any reward_model output directory
//   reward: {type: rules, rules: [{kind: contains, words: [Tim], weight: 1}]}
//   reward: {type: http, url: "http://127.0.0.1:8471/score", timeout_s: 30, retries: 3}
//   reward: {type: sum, normalize: true, clip: 5,
//            parts: [{weight: 1.0, type: model, stage: rm}, {weight: 0.5, type: rules, rules: [...]}]}
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "framework/config/choices.h"

namespace reglage::config {

// One rule check (reward/rules.h documents how each kind scores).
struct RuleConfig {
  std::string principle;            // a human description, shown in errors and logs
  std::string kind;                 // regex | not_regex | contains | excludes | exact_reference | length
  double weight = 1.0;              // may be negative (a penalty)
  std::string pattern;              // regex, not_regex: PCRE2 pattern (UTF-8)
  std::vector<std::string> words;   // contains (all must occur), excludes (none may occur)
  bool case_sensitive = true;       // contains, excludes, exact_reference
  bool whole_word = true;           // contains, excludes, exact_reference: match whole words only
  int64_t min_chars = 0;            // length: bounds on the response's characters (0 = no bound)
  int64_t max_chars = 0;
  double penalty_per_char = 0.0;    // length: > 0 gives a graded penalty instead of pass/fail
};

// A remote reward service (reward/http_source.h documents the protocol).
struct HttpRewardConfig {
  std::string url;                // http://host[:port]/path (https is refused)
  double timeout_s = 30;          // one request: write + read of the full answer
  double connect_timeout_s = 5;   // TCP connect
  int64_t retries = 3;            // extra attempts after a retryable failure (0 = try once)
  double backoff_s = 0.5;         // sleep before retry k (k = 0, 1, ...): backoff_s * 2^k
  int64_t batch_size = 64;        // inputs per POST
  std::string token;              // "" = no Authorization header, else "Bearer <token>"
};

struct RewardSpec {
  std::optional<RewardType> type;   // model | rules | http | sum (required; none = no reward)
  double weight = 1.0;              // only inside sum parts: this part's weight
  // model
  std::string stage;                // a reward_model stage of the pipeline (run_dir/<stage>/final) ...
  std::string path;                 // ... or a reward_model output directory (exactly one of the two)
  int64_t batch_size = 32;          // model: sequences per forward pass
  // rules
  std::vector<RuleConfig> rules;
  // http (token_env: the bearer token is read from this environment variable when the source is built)
  HttpRewardConfig http;
  std::string token_env;
  // sum
  std::vector<RewardSpec> parts;
  // Top level only: whiten rewards with running mean/std (state saved in checkpoints), then clip to
  // [-clip, clip] (0 = no clipping).
  bool normalize = false;
  double clip = 0.0;
};

struct PipelineConfig;

// Reads a reward from its own YAML file (the mapping above, or wrapped as `reward: {...}`), for
// `reglage eval --reward FILE`. Model sources name a directory (`path`), or with `pipeline` given a
// reward_model stage of it (`stage`). Throws ConfigError listing every problem with its line.
RewardSpec load_reward_file(const std::string& path, const PipelineConfig* pipeline = nullptr);

// "rules (3 checks)", "model stage rm", "sum of 2 parts, normalized": a short summary for logs.
std::string describe_reward(const RewardSpec& spec);

}  // namespace reglage::config
