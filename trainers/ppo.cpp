// PPO stage: reinforcement learning from a reward source on ONE shared base per rank.
//   mpirun -np N reglage run configs/demo.yaml      (a stage with type: ppo, usually init_from: sft)
// The base is the pipeline's model with the init_from stage merged. On it:
//   actor     = LoRA adapter named after the stage (starts at B = 0, so it starts as the init_from policy)
//   reference = the base with no adapter active (the init_from policy, frozen)
//   critic    = LoRA adapter "<stage>-critic" + a scalar value head
//   reward    = a reward_model stage's adapter + head added to the same base when it sits on the same lineage
//               (otherwise whatever source `reward:` names: rules, http, a sum)
// The iteration is rl_iteration.h's; PPO's part of it: every rank takes its shard of the global batch of
// prompts x samples_per_prompt, computes reference log-probs and values, shapes per-token rewards with the
// KL penalty, runs GAE and whitens advantages over the global batch, then makes clipped policy + value
// updates. Output in run_dir/<stage>/final/: the actor adapter (PEFT), critic/ (adapter + value_head.safetensors)
// and the lineage.
#include "framework/core/error.h"
#include "framework/io/safetensors.h"
#include "framework/lora/adapter.h"
#include "framework/model/heads.h"
#include "framework/rl/ppo_math.h"
#include "trainers/rl_iteration.h"

namespace reglage::trainers {

namespace {

// PPO's own IterationSums slots.
enum PpoStat : size_t { kValueLoss = kCommonStats, kValueClipFrac, kApproxKl, kExplainedVar, kPpoStatsEnd };

lora::LoraConfig lora_config(const config::PipelineConfig& cfg) {
  lora::LoraConfig lc;
  lc.rank = cfg.lora.rank;
  lc.alpha = cfg.lora.alpha;
  lc.dropout = cfg.lora.dropout;
  lc.targets = cfg.lora.targets;
  return lc;
}

// Adapter tensors under prefixed names ("actor." / "critic."), so both fit in one checkpoint file.
void collect(model::CausalLM& m, const std::string& adapter, const std::string& prefix, std::vector<torch::Tensor>& params,
             std::vector<std::string>& names) {
  for (auto& [key, t] : lora::adapter_tensors(m, adapter)) {
    t.set_requires_grad(true);
    params.push_back(t);
    names.push_back(prefix + key);
  }
}

class Ppo : public RlAlgorithm {
 public:
  Ppo(StageContext& ctx, Policy& policy)
      : ctx_(ctx), o_(ctx.stage.ppo), m_(policy.model), actor_(ctx.stage.name), critic_(critic_adapter(ctx.stage.name)),
        value_head_(m_->config().dim, ctx.pipeline.seed + 29), base_model_(policy.lineage.base_model) {
    const auto& cfg = ctx.pipeline;
    lora::add_adapter(m_, actor_, lora_config(cfg), cfg.seed);
    lora::add_adapter(m_, critic_, lora_config(cfg), cfg.seed + 1);
    lora::set_trainable(m_, lora::TrainMode::kLora, actor_);  // the base and every other adapter frozen
    m_->set_storage(kernels::effective_storage(cfg.model.storage, m_->dtype()));  // ppo trains LoRA only (validated)
    m_->checkpoint_layers = ctx.stage.activation_checkpointing;
    {
      torch::NoGradGuard no_grad;
      value_head_->weight.zero_();  // values start at 0: no random baseline before the critic has learned
    }
    std::vector<std::string> actor_names, critic_names;
    collect(m_, actor_, "actor.", actor_params_, actor_names);
    collect(m_, critic_, "critic.", critic_params_, critic_names);
    critic_params_.push_back(value_head_->weight);
    critic_names.push_back("value_head.weight");
    critic_params_.push_back(value_head_->bias);
    critic_names.push_back("value_head.bias");
    all_params_ = actor_params_;
    all_params_.insert(all_params_.end(), critic_params_.begin(), critic_params_.end());
    all_names_ = actor_names;
    all_names_.insert(all_names_.end(), critic_names.begin(), critic_names.end());
    actor_opt_.emplace(actor_params_, actor_names, adamw_config(ctx.stage));
    critic_opt_.emplace(critic_params_, critic_names, adamw_config(ctx.stage));
  }

  std::string describe() const override {
    return "ppo: " + std::to_string(o_.max_iterations) + " iterations of " +
           std::to_string(o_.rollout_batch_size * o_.samples_per_prompt) + " responses";
  }
  TrainState train_state(data::DataSampler& sampler, nlohmann::json* extra) override {
    return {all_params_, all_names_, *actor_opt_, sampler, &*critic_opt_, extra};
  }
  void save_extra(nlohmann::json& extra) const override { extra["kl_coef"] = kl_ctl_.coef(); }
  void restore_extra(const nlohmann::json& extra) override { kl_ctl_.set_coef(extra.at("kl_coef").get<double>()); }
  model::AdapterSet critic() const override { return {critic_}; }
  config::KlEstimator kl_estimator() const override { return o_.kl_estimator; }
  size_t own_stats() const override { return kPpoStatsEnd - kCommonStats; }

  // Each prompt samples_per_prompt times, then sharded: a prompt's samples may span ranks.
  std::vector<int64_t> rollout_rows(const std::vector<int64_t>& prompts, int rank, int world) const override {
    std::vector<int64_t> global;
    for (int64_t p : prompts)
      for (int64_t k = 0; k < o_.samples_per_prompt; ++k) global.push_back(p);
    return data::shard(global, rank, world);
  }

  void evaluate(Rollout& ro, const RolloutSpec& spec) override { evaluate_rollout(m_, value_head_, ro, spec); }

  // KL-shaped per-token rewards, GAE with the critic's values, advantages whitened over the global batch.
  torch::Tensor advantages(const Rollout& ro, const std::vector<double>& shaped, const torch::Tensor& kl,
                           IterationSums& sums) override {
    auto scores = torch::tensor(shaped, torch::kFloat32);                 // (n)
    auto rewards = rl::token_rewards(scores, kl, ro.mask, kl_ctl_.coef());  // (n, R)
    auto gae = rl::gae(rewards, ro.values, ro.mask, o_.gamma, o_.lam);
    returns_ = gae.returns;                                                  // (n, R)
    sums.add(kExplainedVar, rl::explained_variance(ro.values, gae.returns, ro.mask));
    return rl::whiten(gae.advantages, ro.mask, &ctx_.comm);                // (n, R), collective
  }

  // Clipped policy loss + clipped value loss, one all-reduce for actor and critic, each clipped and stepped.
  void update(const Rollout& ro, const torch::Tensor& idx, const torch::Tensor& advantages, const RolloutSpec& spec,
              const IterationInfo& info, IterationSums& sums) override {
    const auto& st = ctx_.stage;
    const int64_t done = info.done;
    auto out = forward_minibatch(m_, value_head_, ro, idx, spec);  // logp, entropy, values (b, R) with grad
    auto mask = ro.mask.index_select(0, idx);                        // (b, R)
    auto pl = rl::policy_loss(out.logp, ro.old_logp.index_select(0, idx), advantages.index_select(0, idx), mask,
                              o_.clip_range);
    auto vl = rl::value_loss(out.values, ro.values.index_select(0, idx), returns_.index_select(0, idx), mask,
                             o_.value_clip_range);
    auto entropy = rl::masked_mean(out.entropy, mask);
    auto loss = pl.loss - o_.entropy_coef * entropy + o_.vf_coef * vl.loss;
    check_finite(st, done, "policy loss", pl.loss.item<double>());
    check_finite(st, done, "value loss", vl.loss.item<double>());
    (loss / double(ctx_.comm.size())).backward();  // gradients summed across ranks below: the mean over ranks
    dist::all_reduce_gradients(ctx_.comm, all_params_);  // sync point
    const double actor_norm = train::clip_grad_norm(actor_params_, st.max_grad_norm);
    const double critic_norm = train::clip_grad_norm(critic_params_, st.max_grad_norm);
    check_finite(st, done, "actor grad norm", actor_norm);
    check_finite(st, done, "critic grad norm", critic_norm);
    const double critic_lr = train::scheduled_lr(info.it, o_.max_iterations, o_.critic_lr, st.warmup_steps,
                                                 st.schedule, st.min_lr_ratio);
    actor_opt_->step(info.actor_lr);
    critic_opt_->step(critic_lr);
    actor_opt_->zero_grad();
    critic_opt_->zero_grad();
    sums.add(kPolicyLoss, pl.loss.item<double>());
    sums.add(kValueLoss, vl.loss.item<double>());
    sums.add(kEntropy, entropy.item<double>());
    sums.add(kClipFrac, pl.clip_fraction);
    sums.add(kValueClipFrac, vl.clip_fraction);
    sums.add(kApproxKl, pl.approx_kl);
    sums.add(kMinibatches, 1.0);
  }

  // The adaptive KL controller steps on every rank; the record shows the coefficient this iteration used.
  nlohmann::json end_iteration(const IterationSums& sums, double kl_per_seq) override {
    const double coef_used = kl_ctl_.coef();
    kl_ctl_.update(kl_per_seq, int64_t(sums[kResponses]));
    const double minibatches = std::max(sums[kMinibatches], 1.0);
    return {{"kl_coef", coef_used},
            {"value_loss", sums[kValueLoss] / minibatches},
            {"value_clip_fraction", sums[kValueClipFrac] / minibatches},
            {"approx_kl", sums[kApproxKl] / minibatches},
            {"explained_variance", sums[kExplainedVar] / ctx_.comm.size()}};
  }

  void write_output(const std::string& dir) override {
    lora::save_peft(m_, critic_, dir + "/critic", base_model_);
    io::write_safetensors(dir + "/critic/value_head.safetensors",
                          {{"weight", value_head_->weight}, {"bias", value_head_->bias}});
  }

 private:
  StageContext& ctx_;
  const config::PpoSettings& o_;
  model::CausalLM& m_;
  std::string actor_, critic_;
  model::ScalarHead value_head_;
  std::vector<torch::Tensor> actor_params_, critic_params_, all_params_;
  std::vector<std::string> all_names_;
  std::optional<train::AdamW> actor_opt_, critic_opt_;
  rl::AdaptiveKLController kl_ctl_{o_.kl_coef, o_.kl_target, o_.kl_horizon};
  torch::Tensor returns_;  // (n, R) GAE returns of the iteration's rollout, the value loss's target
  std::string base_model_;
};

}  // namespace

void run_ppo(StageContext& ctx) {
  run_rl_stage(ctx, [&](Policy& p) -> std::unique_ptr<RlAlgorithm> { return std::make_unique<Ppo>(ctx, p); });
}

}  // namespace reglage::trainers
