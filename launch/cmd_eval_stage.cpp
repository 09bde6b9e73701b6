// reglage eval --config PIPELINE.yaml --stage NAME|base --prompts FILE.jsonl [--reward REWARD.yaml]
//              [--samples K] [--temperature T] [--top-p P] [--max-new-tokens N] [--seed S] [--threads N]
//              [--show K] [--merge-weight W]
// Generates from the policy a stage produced (`base`: the pipeline's untouched model) for every prompt row
// ({"prompt"} or chat form, optional "reference"), scores the responses and prints a table, then one JSON
// line:
//   prompts, samples, responses, reward_mean, reward_std, pass_rate (rules rewards), kl, response_length
// The reward is --reward's file, else the stage's own `reward:` (ppo and grpo stages); with neither only lengths and
// KL are reported. pass_rate: the share of responses that earn everything a rules reward allows (every check
// with weight > 0 passes, every check with weight < 0 does not). kl: mean over responses of
// sum_t log pi(y_t) - log pi_init(y_t) on the generated tokens, pi_init being the policy the stage started
// from (for `base`, 0); an estimate of KL(pi || pi_init) when sampling at temperature 1.
// Greedy (temperature 0) when --samples is 1 and no --temperature is given.
// --merge-weight W (in [0, 1], default 1) evaluates the policy theta0 + W (theta_ft - theta0) between the
// original base (W = 0) and the stage's fine-tuned weights, as `reglage export --format hf` writes it
// (framework/io/export.h); KL stays measured against the policy the stage started from.
#include <cmath>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "framework/checkpoint/run_layout.h"
#include "framework/config/config_error.h"
#include "framework/config/pipeline_config.h"
#include "framework/config/reward_config.h"
#include "framework/core/error.h"
#include "framework/core/file_util.h"
#include "framework/data/prompt_data.h"
#include "framework/generate/generate.h"
#include "framework/io/export.h"
#include "framework/io/lineage.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "framework/model/config.h"
#include "launch/commands.h"
#include "reward/reward_factory.h"
#include "reward/rules.h"
#include "trainers/ppo_rollout.h"
#include "trainers/stage_traits.h"

namespace reglage::launch {

void set_threads(long long threads);

namespace {

namespace F = torch::nn::functional;

// The policy of a stage: the model its output sits on, and the adapter to switch on ({} for base or a
// fully trained stage, whose reference is then a separate model).
struct StagePolicy {
  model::CausalLM model{nullptr};
  model::AdapterSet adapters;     // active for the policy
  model::CausalLM reference{nullptr};  // the init policy when it is not `model` without adapters
  bool has_reference = false;     // false for base: KL is 0
  io::Lineage lineage;
};

// merge_weight < 1: the interpolated policy as its own model, with no adapter.
StagePolicy load_stage_policy(const config::PipelineConfig& cfg, const std::string& stage, double merge_weight) {
  const auto dtype = model::parse_dtype(cfg.model.dtype);
  StagePolicy p;
  if (stage == "base") {
    if (merge_weight != 1.0)
      fail("--merge-weight = ", merge_weight, " with --stage base (it interpolates a stage's output toward the base)");
    p.model = io::load_model(cfg.model.path);
    p.lineage.base_model = cfg.model.path;
    return p;
  }
  const config::StageConfig* st = cfg.find_stage(stage);
  if (st == nullptr) {
    std::string names = "base";
    for (const auto& s : cfg.stages) names += ", " + s.name;
    fail("--stage ", stage, ": no such stage in ", cfg.source, " (expected one of: ", names, ")");
  }
  if (!trainers::stage_traits(st->type).produces_policy)
    fail("--stage ", stage, ": a reward_model stage is not a policy (expected base or an sft, dpo, ppo or grpo stage)");
  const std::string dir = checkpoint::RunLayout(cfg.run_dir).final_dir(stage);
  if (!core::is_directory(dir)) fail("--stage ", stage, ": no output in ", dir, " (has the stage run?)");
  const io::StageOutput out = io::read_stage_output(dir, cfg.model.path);  // checks it against its manifest
  p.lineage = out.lineage;
  p.has_reference = true;
  if (merge_weight != 1.0) {
    p.model = io::load_interpolated(out, merge_weight, dtype);
    p.reference = io::load_lineage(p.lineage, dtype);
  } else if (core::file_exists(dir + "/config.json")) {  // a fully trained stage
    p.model = io::load_model(dir);
    p.reference = io::load_lineage(p.lineage, dtype);
  } else {
    p.model = io::load_lineage(p.lineage, dtype);
    lora::load_peft(p.model, "policy", dir);
    p.adapters = {"policy"};
    p.reference = p.model;  // the same base with the adapter off
  }
  return p;
}

// Log-probs of each response's tokens (sum over the response): (n) float64.
torch::Tensor response_logp_sum(model::CausalLM& m, const model::AdapterSet& adapters, const trainers::Rollout& ro) {
  torch::NoGradGuard no_grad;
  auto logits = m->forward({ro.ids, {}, ro.valid, nullptr, adapters});  // (n, L, V)
  auto idx = ro.index.unsqueeze(-1).expand({ro.index.size(0), ro.index.size(1), logits.size(2)});
  auto logp = F::log_softmax(logits.gather(1, idx), -1).gather(-1, ro.targets.unsqueeze(-1)).squeeze(-1);  // (n, R)
  return (logp * ro.mask).sum(1).to(torch::kFloat64);
}

}  // namespace

int cmd_eval_stage(Args& args) {
  const std::string config_path = args.required("config");
  const std::string stage = args.required("stage");
  const std::string prompts_path = args.required("prompts");
  const std::string reward_path = args.str("reward");
  const long long samples = args.integer("samples", 1);
  const bool temperature_given = args.has("temperature");
  const double temperature = args.number("temperature", samples > 1 ? 1.0 : 0.0);
  const double top_p = args.number("top-p", 1.0);
  const long long max_new = args.integer("max-new-tokens", 0);
  const long long seed = args.integer("seed", 1234);
  const long long threads = args.integer("threads", 0);
  const long long show = args.integer("show", 0);
  const long long batch = args.integer("batch-size", 64);
  const double merge_weight = args.number("merge-weight", 1.0);
  args.finish();
  io::check_merge_weight(merge_weight);
  if (samples < 1) fail("--samples = ", samples, " (must be >= 1)");
  if (temperature < 0) fail("--temperature = ", temperature, " (must be >= 0)");
  if (samples > 1 && temperature_given && temperature == 0)
    fail("--samples = ", samples, " with --temperature 0: greedy decoding gives the same response every time");
  if (batch < 1) fail("--batch-size = ", batch, " (must be >= 1)");
  if (seed < 0) fail("--seed = ", seed, " (must be >= 0)");
  set_threads(threads);

  const auto cfg = config::load_pipeline(config_path, {}, config::DataFiles::may_be_missing);
  const config::StageConfig* st = cfg.find_stage(stage);
  const bool takes_prompts = st != nullptr && trainers::stage_traits(st->type).takes_prompts();  // ppo, grpo
  config::RewardSpec reward_spec;
  if (!reward_path.empty()) reward_spec = config::load_reward_file(reward_path, &cfg);
  else if (takes_prompts) reward_spec = st->reward;

  StagePolicy policy = load_stage_policy(cfg, stage, merge_weight);
  auto& m = policy.model;
  m->eval();
  auto tok = io::load_model_tokenizer(cfg.model.path, cfg.model.tokenizer, m->config().vocab_size);
  const int64_t new_tokens = max_new > 0 ? max_new : (takes_prompts ? st->ppo.max_new_tokens : 120);
  data::SftDataOptions opt;
  opt.chat_template = st != nullptr ? st->chat_template : "auto";
  opt.max_seq_len = m->config().max_seq_len - new_tokens;
  if (opt.max_seq_len <= 0)
    fail("--max-new-tokens = ", new_tokens, " leaves no room for a prompt in the model's ", m->config().max_seq_len,
         "-token context");
  const auto prompts = data::load_prompt_jsonl(prompts_path, *tok, opt);

  std::unique_ptr<reward::RewardSource> reward;
  reward::RewardBuildContext reward_ctx{cfg.run_dir, cfg.model.path, nullptr, {}};
  if (reward_spec.type.has_value()) reward = reward::make_reward_source(reward_spec, reward_ctx);

  // Every prompt `samples` times, generated and scored in chunks of --batch-size.
  trainers::RolloutSpec spec;
  spec.actor = policy.adapters;
  spec.max_new_tokens = new_tokens;
  spec.temperature = temperature;
  spec.top_p = top_p;
  spec.pad_id = std::max<int64_t>(tok->eos_id(), 0);
  std::vector<int64_t> rows;
  for (size_t i = 0; i < prompts.rows.size(); ++i)
    for (long long k = 0; k < samples; ++k) rows.push_back(int64_t(i));
  std::vector<double> rewards, kls, lengths;
  int64_t passed = 0;
  for (size_t start = 0; start < rows.size(); start += size_t(batch)) {
    std::vector<int64_t> chunk(rows.begin() + start, rows.begin() + std::min(rows.size(), start + size_t(batch)));
    spec.seed = uint64_t(seed) * 1000003ULL + start;
    trainers::Rollout ro = trainers::sample_rollout(m, prompts, chunk, spec, *tok);  // temperature 0: greedy
    torch::Tensor kl = torch::zeros({int64_t(chunk.size())}, torch::kFloat64);
    if (policy.has_reference)
      kl = response_logp_sum(m, policy.adapters, ro) - response_logp_sum(policy.reference, {}, ro);
    std::vector<double> r;
    if (reward) r = reward->score(ro.reward_inputs);
    for (size_t i = 0; i < chunk.size(); ++i) {
      kls.push_back(kl[int64_t(i)].item<double>());
      lengths.push_back(ro.mask[int64_t(i)].sum().item<double>());
      if (reward) rewards.push_back(r[i]);
      if (reward_spec.type == config::RewardType::kRules && reward::rules_pass(reward_spec.rules, ro.reward_inputs[i])) ++passed;
      if (int64_t(start + i) < show)
        std::cerr << "[" << (reward ? std::to_string(r[i]) : std::string("-")) << "] " << ro.reward_inputs[i].prompt
                  << " -> " << ro.reward_inputs[i].response << "\n";
    }
  }

  const double n = double(rows.size());
  auto mean = [&](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? 0.0 : s / double(v.size());
  };
  nlohmann::json result{{"stage", stage},
                        {"prompts", prompts.rows.size()},
                        {"samples", samples},
                        {"responses", rows.size()},
                        {"temperature", temperature},
                        {"kl", mean(kls)},
                        {"response_length", mean(lengths)}};
  std::ostringstream table;
  table << std::left << std::setw(18) << "stage" << stage << "\n"
        << std::setw(18) << "prompts" << prompts.rows.size() << " x " << samples << " sample(s), "
        << (temperature == 0 ? std::string("greedy") : "temperature " + std::to_string(temperature)) << "\n";
  if (reward) {
    const double mu = mean(rewards);
    double sq = 0;
    for (double x : rewards) sq += (x - mu) * (x - mu);
    result["reward"] = reward->describe();
    result["reward_mean"] = mu;
    result["reward_std"] = std::sqrt(sq / n);
    table << std::setw(18) << "reward" << reward->describe() << "\n"
          << std::setw(18) << "reward mean" << mu << " (std " << std::sqrt(sq / n) << ")\n";
    if (reward_spec.type == config::RewardType::kRules) {
      result["passed"] = passed;
      result["pass_rate"] = double(passed) / n;
      table << std::setw(18) << "pass rate" << passed << "/" << rows.size() << " = " << double(passed) / n << "\n";
    }
  }
  table << std::setw(18) << "kl to init" << mean(kls) << "\n"
        << std::setw(18) << "response length" << mean(lengths) << " tokens\n";
  std::cout << table.str() << result.dump() << std::endl;
  return 0;
}

}  // namespace reglage::launch
