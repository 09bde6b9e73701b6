// GRPO stage: group relative policy optimisation (Shao et al. 2024) from any reward source, no critic.
//   mpirun -np N reglage run configs/demo_grpo.yaml      (a stage with type: grpo, usually init_from: sft)
// The policy is the shared base (with the init_from stage merged) plus a LoRA adapter named after the stage;
// the reference policy is the same model with the adapter off (the init_from policy, frozen). The iteration
// is rl_iteration.h's; GRPO's part of it: every rank gets whole prompts of the rollout_batch_size and samples
// group_size responses for each, so a group never spans ranks. Each response's advantage is its reward
// standardised within its group, (r - mean) / (std + eps), the same for every token; the minibatch updates
// minimise the clipped objective plus beta x k3 KL to the reference (framework/rl/grpo_math.h). Output in
// run_dir/<stage>/final/: the adapter (PEFT) and the lineage, loadable like an sft stage's.
#include "framework/rl/grpo_math.h"
#include "framework/rl/ppo_math.h"
#include "framework/rl/preference_math.h"
#include "trainers/rl_iteration.h"

namespace reglage::trainers {

namespace {

// (r - group mean) / (group std + eps): eps keeps a group whose rewards barely differ from blowing up.
constexpr double kAdvantageEps = 1e-4;

// GRPO's own IterationSums slots.
enum GrpoStat : size_t { kGroups = kCommonStats, kFlatGroups, kAdvAbsSum, kLoss, kKlLoss, kGradNorm, kGrpoStatsEnd };

// Groups (consecutive runs of group_size rewards) whose rewards are all equal: they get advantage 0 and
// teach nothing.
int64_t flat_groups(const std::vector<double>& rewards, int64_t group_size) {
  int64_t flat = 0;
  for (size_t g = 0; g + size_t(group_size) <= rewards.size(); g += size_t(group_size)) {
    bool same = true;
    for (size_t i = g + 1; i < g + size_t(group_size); ++i) same = same && rewards[i] == rewards[g];
    flat += same ? 1 : 0;
  }
  return flat;
}

class Grpo : public RlAlgorithm {
 public:
  Grpo(StageContext& ctx, Policy& policy)
      : ctx_(ctx), o_(ctx.stage.ppo), g_(ctx.stage.grpo), m_(policy.model),
        trainable_(setup_trainable(ctx, m_)),  // the stage's LoRA adapter (validated: train: lora)
        optimizer_(trainable_.params, trainable_.names, adamw_config(ctx.stage)) {}

  std::string describe() const override {
    return "grpo: " + std::to_string(o_.max_iterations) + " iterations of " + std::to_string(o_.rollout_batch_size) +
           " prompts x " + std::to_string(g_.group_size) + " responses, beta " + std::to_string(g_.beta);
  }
  TrainState train_state(data::DataSampler& sampler, nlohmann::json* extra) override {
    return {trainable_.params, trainable_.names, optimizer_, sampler, nullptr, extra};
  }
  config::KlEstimator kl_estimator() const override { return config::KlEstimator::kK3; }
  size_t own_stats() const override { return kGrpoStatsEnd - kCommonStats; }

  // This rank's whole prompts, each group_size times: a group is group_size consecutive rows.
  std::vector<int64_t> rollout_rows(const std::vector<int64_t>& prompts, int rank, int world) const override {
    std::vector<int64_t> rows;
    for (int64_t p : data::shard(prompts, rank, world))
      for (int64_t k = 0; k < g_.group_size; ++k) rows.push_back(p);
    return rows;
  }

  void evaluate(Rollout& ro, const RolloutSpec& spec) override { evaluate_logprobs(m_, ro, spec); }

  // Group advantages: groups are whole on this rank, so they need no communication.
  torch::Tensor advantages(const Rollout& /*ro*/, const std::vector<double>& shaped, const torch::Tensor& /*kl*/,
                           IterationSums& sums) override {
    auto advantages = rl::group_advantages(torch::tensor(shaped, torch::kFloat64), g_.group_size, kAdvantageEps)
                          .to(torch::kFloat32);  // (n)
    sums.add(kGroups, double(shaped.size() / size_t(g_.group_size)));
    sums.add(kFlatGroups, double(flat_groups(shaped, g_.group_size)));
    sums.add(kAdvAbsSum, advantages.abs().sum().item<double>());
    return advantages;
  }

  // The loss is the mean over responses of each response's mean over its tokens (GRPO paper); every rank
  // holds minibatch_size / world responses, so dividing by world before the summing all-reduce gives the
  // mean over the global minibatch.
  void update(const Rollout& ro, const torch::Tensor& idx, const torch::Tensor& advantages, const RolloutSpec& spec,
              const IterationInfo& info, IterationSums& sums) override {
    const auto& st = ctx_.stage;
    const double world = double(ctx_.comm.size());
    auto out = forward_policy(m_, ro, idx, spec);  // logp, entropy (b, R), with grad
    auto mask = ro.mask.index_select(0, idx);      // (b, R)
    auto r = rl::grpo_loss(out.logp, ro.old_logp.index_select(0, idx), ro.ref_logp.index_select(0, idx),
                           advantages.index_select(0, idx), mask, o_.clip_range, g_.beta);
    auto entropy = rl::masked_mean(out.entropy, mask);
    auto loss = r.loss - o_.entropy_coef * entropy;
    check_finite(st, info.done, "loss", loss.item<double>());
    (loss / world).backward();
    dist::all_reduce_gradients(ctx_.comm, trainable_.params);  // sync point
    const double grad_norm = train::clip_grad_norm(trainable_.params, st.max_grad_norm);
    check_finite(st, info.done, "grad norm", grad_norm);
    optimizer_.step(info.actor_lr);
    optimizer_.zero_grad();
    sums.add(kLoss, loss.item<double>());
    sums.add(kPolicyLoss, r.policy_loss);
    sums.add(kKlLoss, r.kl);
    sums.add(kEntropy, entropy.item<double>());
    sums.add(kClipFrac, r.clip_fraction);
    sums.add(kGradNorm, grad_norm / world);  // the same on every rank (after the all-reduce)
    sums.add(kMinibatches, 1.0);
  }

  nlohmann::json end_iteration(const IterationSums& sums, double /*kl_per_seq*/) override {
    const double minibatches = std::max(sums[kMinibatches], 1.0);
    return {{"zero_std_fraction", sums[kFlatGroups] / std::max(sums[kGroups], 1.0)},
            {"advantage_abs_mean", sums[kAdvAbsSum] / sums[kResponses]},
            {"kl_per_token", sums[kKlSum] / std::max(sums[kTokens], 1.0)},
            {"beta", g_.beta},
            {"loss", sums[kLoss] / minibatches},
            {"kl_loss", sums[kKlLoss] / minibatches},
            {"grad_norm", sums[kGradNorm] / minibatches}};
  }

 private:
  StageContext& ctx_;
  const config::PpoSettings& o_;  // the ppo keys grpo shares (config/pipeline_config.h, GrpoSettings)
  const config::GrpoSettings& g_;
  model::CausalLM& m_;
  Trainable trainable_;
  train::AdamW optimizer_;
};

}  // namespace

void run_grpo(StageContext& ctx) {
  run_rl_stage(ctx, [&](Policy& p) -> std::unique_ptr<RlAlgorithm> { return std::make_unique<Grpo>(ctx, p); });
}

}  // namespace reglage::trainers
