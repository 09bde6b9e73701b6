// PPO stage: reinforcement learning from a reward source on ONE shared base per rank.
//   mpirun -np N reglage run configs/demo.yaml      (a stage with type: ppo, usually init_from: sft)
// The base is the pipeline's model with the init_from stage merged. On it:
//   actor     = LoRA adapter named after the stage (starts at B = 0, so it starts as the init_from policy)
//   reference = the base with no adapter active (the init_from policy, frozen)
//   critic    = LoRA adapter "<stage>-critic" + a scalar value head
//   reward    = a reward_model stage's adapter + head added to the same base when it sits on the same lineage
//               (otherwise whatever source `reward:` names: rules, http, a sum)
// Each iteration, every rank takes its shard of a global prompt batch: samples responses with the actor
// (KV cache, per-token log-probs), scores them, computes reference log-probs and values, shapes per-token
// rewards with the KL penalty, runs GAE and whitens advantages over the global batch, then ppo_epochs passes
// of clipped policy + value updates with gradients all-reduced. Output in run_dir/<stage>/final/: the actor
// adapter (PEFT), critic/ (adapter + value_head.safetensors) and the lineage.
#include <chrono>
#include <cmath>

#include "framework/core/error.h"
#include "framework/core/progress.h"
#include "framework/data/prompt_data.h"
#include "framework/generate/generate.h"
#include "framework/io/safetensors.h"
#include "framework/lora/adapter.h"
#include "framework/metrics/metrics_log.h"
#include "framework/metrics/progress_line.h"
#include "framework/model/heads.h"
#include "framework/rl/ppo_math.h"
#include "reward/combine.h"
#include "reward/reward_factory.h"
#include "trainers/policy_setup.h"
#include "trainers/ppo_rollout.h"
#include "trainers/train_state.h"

namespace reglage::trainers {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Sums of per-iteration statistics across ranks, in one collective.
struct IterationSums {
  std::vector<double> v;
  void add(size_t i, double x) {
    if (v.size() <= i) v.resize(i + 1, 0.0);
    v[i] += x;
  }
  void all_reduce(dist::Communicator& comm) {
    auto t = torch::tensor(v, torch::kFloat64);
    comm.all_reduce_sum(t, "allreduce ppo metrics");
    for (size_t i = 0; i < v.size(); ++i) v[i] = t[int64_t(i)].item<double>();
  }
  double operator[](size_t i) const { return i < v.size() ? v[i] : 0.0; }
};

enum Stat : size_t {
  kResponses, kRewardSum, kRewardSq, kKlSum, kTokens, kEntropy, kPolicyLoss, kValueLoss, kClipFrac, kValueClipFrac,
  kApproxKl, kMinibatches, kExplainedVar, kPromptTokens
};


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

}  // namespace

void run_ppo(StageContext& ctx) {
  const auto& cfg = ctx.pipeline;
  const auto& st = ctx.stage;
  const auto& o = st.ppo;
  const int rank = ctx.comm.rank(), world = ctx.comm.size();

  // ---- setup: one base, actor + critic adapters, value head, reward, prompts, optimizers -------------
  Policy policy = load_policy(ctx);
  auto& m = policy.model;
  const std::string actor = st.name, critic = st.name + "-critic";
  lora::add_adapter(m, actor, lora_config(cfg), cfg.seed);
  lora::add_adapter(m, critic, lora_config(cfg), cfg.seed + 1);
  lora::set_trainable(m, lora::TrainMode::kLora, actor);  // the base and every other adapter frozen
  model::ScalarHead value_head(m->config().dim, cfg.seed + 29);
  {
    torch::NoGradGuard no_grad;
    value_head->weight.zero_();  // values start at 0: no random baseline before the critic has learned
  }
  std::vector<torch::Tensor> actor_params, critic_params;
  std::vector<std::string> actor_names, critic_names;
  collect(m, actor, "actor.", actor_params, actor_names);
  collect(m, critic, "critic.", critic_params, critic_names);
  critic_params.push_back(value_head->weight);
  critic_names.push_back("value_head.weight");
  critic_params.push_back(value_head->bias);
  critic_names.push_back("value_head.bias");
  std::vector<torch::Tensor> all_params = actor_params;
  all_params.insert(all_params.end(), critic_params.begin(), critic_params.end());
  std::vector<std::string> all_names = actor_names;
  all_names.insert(all_names.end(), critic_names.begin(), critic_names.end());

  reward::RewardBuildContext reward_ctx{cfg.run_dir, cfg.model.path, m, policy.lineage};
  auto reward_source = reward::make_reward_source(st.reward, reward_ctx, "stages." + st.name + ".reward");
  reward::RewardNormalizer normalizer(st.reward.clip);

  const auto opt = prompt_data_options(st, m->config().max_seq_len);
  const auto prompts = data::load_prompt_jsonl(st.data, *policy.tok, opt);
  check_step_memory(ctx, m->config(), std::max<int64_t>(1, st.ppo.minibatch_size / world),
                    longest_sequence(prompts) + st.ppo.max_new_tokens);
  std::optional<data::PromptDataset> eval_prompts;
  if (!st.eval_data.empty()) eval_prompts = data::load_prompt_jsonl(st.eval_data, *policy.tok, opt);

  train::AdamW actor_opt(actor_params, actor_names, adamw_config(st));
  train::AdamW critic_opt(critic_params, critic_names, adamw_config(st));
  data::DataSampler sampler(int64_t(prompts.rows.size()), cfg.seed);
  rl::AdaptiveKLController kl_ctl(o.kl_coef, o.kl_target, o.kl_horizon);
  torch::manual_seed(cfg.seed * 1000003ULL + uint64_t(rank));

  // ---- resume --------------------------------------------------------------------------------------
  nlohmann::json extra = {{"kl_coef", kl_ctl.coef()}, {"normalizer", {0, 0.0, 0.0}}};
  TrainState state{all_params, all_names, actor_opt, sampler, &critic_opt, &extra};
  int64_t start = 0;
  if (auto ckpt = load_latest_checkpoint(ctx, state)) {
    start = *ckpt;
    kl_ctl.set_coef(extra.at("kl_coef").get<double>());
    const auto& n = extra.at("normalizer");
    normalizer.restore({n.at(0).get<int64_t>(), n.at(1).get<double>(), n.at(2).get<double>()});
  }
  dist::broadcast_tensors(ctx.comm, all_params, 0, "broadcast weights");
  metrics::MetricsLog log;
  if (ctx.is_root()) log = metrics::MetricsLog(ctx.metrics_path(), start);
  const int64_t responses_global = o.rollout_batch_size * o.samples_per_prompt;
  ctx.log(start > 0 ? "resuming at iteration " + std::to_string(start) + " of " + std::to_string(o.max_iterations)
                    : "ppo: " + std::to_string(o.max_iterations) + " iterations of " + std::to_string(responses_global) +
                          " responses, " + std::to_string(prompts.rows.size()) + " prompts, " + std::to_string(world) +
                          " rank(s); reward: " + reward_source->describe() +
                          std::string());

  RolloutSpec spec;
  spec.actor = {actor};
  spec.critic = {critic};
  spec.max_new_tokens = o.max_new_tokens;
  spec.temperature = o.temperature;
  spec.top_p = o.top_p;
  spec.eos_id = policy.tok->eos_id();
  spec.pad_id = std::max<int64_t>(policy.tok->eos_id(), 0);

  // ---- the loop: rollout, score, advantages, PPO epochs, log, checkpoint --------------------------------
  core::progress_stage(st.name, o.max_iterations);
  core::progress_step(start);
  metrics::ProgressLine progress(st.name, "iteration", o.max_iterations, start, ctx.progress_mode(), std::cout);
  for (int64_t it = start; it < o.max_iterations; ++it) {
    const int64_t done = it + 1;
    const auto t_iter = Clock::now();
    const double actor_lr =
        train::scheduled_lr(it, o.max_iterations, o.actor_lr, st.warmup_steps, st.schedule, st.min_lr_ratio);
    const double critic_lr =
        train::scheduled_lr(it, o.max_iterations, o.critic_lr, st.warmup_steps, st.schedule, st.min_lr_ratio);

    // 1. rollouts: this rank's prompts (each repeated samples_per_prompt times) and sampled responses
    std::vector<int64_t> global;
    for (int64_t p : sampler.next_global_batch(o.rollout_batch_size))
      for (int64_t k = 0; k < o.samples_per_prompt; ++k) global.push_back(p);
    const auto mine = data::shard(global, rank, world);
    const auto t_gen = Clock::now();
    spec.seed = cfg.seed * 0x9E3779B97F4A7C15ULL + uint64_t(it) * 1000003ULL + uint64_t(rank);
    Rollout ro = sample_rollout(m, prompts, mine, spec, *policy.tok);
    const double gen_s = seconds_since(t_gen);

    // 2. scores (raw, then normalised/clipped), reference log-probs, values
    const auto t_score = Clock::now();
    const auto [raw, shaped, raw_sum, raw_sq] = score_rollout(ctx, *reward_source, normalizer, ro, done);
    const double score_s = seconds_since(t_score);
    const auto t_ref = Clock::now();
    evaluate_rollout(m, value_head, ro, spec);  // old_logp, ref_logp, values (no grad)
    const double reference_s = seconds_since(t_ref);
    const auto t_train = Clock::now();

    // 3. KL-shaped per-token rewards, GAE, advantages whitened over the global batch
    auto scores = torch::tensor(shaped, torch::kFloat32);                      // (n)
    auto kl = rl::kl_estimate(ro.old_logp, ro.ref_logp, o.kl_estimator) * ro.mask;  // (n, R)
    auto rewards = rl::token_rewards(scores, kl, ro.mask, kl_ctl.coef());       // (n, R)
    auto gae = rl::gae(rewards, ro.values, ro.mask, o.gamma, o.lam);
    auto advantages = rl::whiten(gae.advantages, ro.mask, &ctx.comm);          // (n, R)
    IterationSums sums;
    sums.add(kResponses, double(raw.size()));
    sums.add(kRewardSum, raw_sum);
    sums.add(kRewardSq, raw_sq);
    sums.add(kKlSum, kl.sum().item<double>());
    sums.add(kTokens, ro.mask.sum().item<double>());
    sums.add(kPromptTokens, double(ro.prompt_tokens));
    sums.add(kExplainedVar, rl::explained_variance(ro.values, gae.returns, ro.mask));

    // 4. ppo_epochs passes over shuffled minibatches: clipped policy loss + clipped value loss
    m->train();
    const int64_t n = int64_t(mine.size()), mb = o.minibatch_size / world;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(cfg.seed * 31 + uint64_t(it) * 1009 + uint64_t(rank));
    for (int64_t epoch = 0; epoch < o.ppo_epochs; ++epoch) {
      auto order = torch::randperm(n, gen, torch::kLong);
      for (int64_t s = 0; s + mb <= n; s += mb) {
        auto idx = order.narrow(0, s, mb);
        auto out = forward_minibatch(m, value_head, ro, idx, spec);  // logp, entropy, values with grad
        auto mask = ro.mask.index_select(0, idx);
        auto pl = rl::policy_loss(out.logp, ro.old_logp.index_select(0, idx), advantages.index_select(0, idx), mask,
                                  o.clip_range);
        auto vl = rl::value_loss(out.values, ro.values.index_select(0, idx), gae.returns.index_select(0, idx), mask,
                                 o.value_clip_range);
        auto entropy = rl::masked_mean(out.entropy, mask);
        auto loss = pl.loss - o.entropy_coef * entropy + o.vf_coef * vl.loss;
        check_finite(st, done, "policy loss", pl.loss.item<double>());
        check_finite(st, done, "value loss", vl.loss.item<double>());
        (loss / double(world)).backward();  // gradients summed across ranks below: the mean over ranks
        dist::all_reduce_gradients(ctx.comm, all_params);  // sync point
        const double actor_norm = train::clip_grad_norm(actor_params, st.max_grad_norm);
        const double critic_norm = train::clip_grad_norm(critic_params, st.max_grad_norm);
        check_finite(st, done, "actor grad norm", actor_norm);
        check_finite(st, done, "critic grad norm", critic_norm);
        actor_opt.step(actor_lr);
        critic_opt.step(critic_lr);
        actor_opt.zero_grad();
        critic_opt.zero_grad();
        sums.add(kPolicyLoss, pl.loss.item<double>());
        sums.add(kValueLoss, vl.loss.item<double>());
        sums.add(kEntropy, entropy.item<double>());
        sums.add(kClipFrac, pl.clip_fraction);
        sums.add(kValueClipFrac, vl.clip_fraction);
        sums.add(kApproxKl, pl.approx_kl);
        sums.add(kMinibatches, 1.0);
      }
    }
    const double train_s = seconds_since(t_train);

    // 5. global metrics, the adaptive KL update, guards
    sums.all_reduce(ctx.comm);
    const double responses = sums[kResponses], minibatches = std::max(sums[kMinibatches], 1.0);
    const double reward_mean = sums[kRewardSum] / responses;
    const double kl_per_seq = sums[kKlSum] / responses;
    const double length = sums[kTokens] / responses;
    check_finite(st, done, "KL", kl_per_seq);
    const double coef_used = kl_ctl.coef();
    kl_ctl.update(kl_per_seq, int64_t(responses));
    const double iter_s = seconds_since(t_iter);
    if (o.warn_kl > 0 && kl_per_seq > o.warn_kl)
      ctx.warn("iteration " + std::to_string(done) + ": KL to the reference " + std::to_string(kl_per_seq) +
               " exceeds warn_kl " + std::to_string(o.warn_kl) + ": the policy may be reward hacking");
    if (o.warn_response_length > 0 && length > double(o.warn_response_length))
      ctx.warn("iteration " + std::to_string(done) + ": mean response length " + std::to_string(length) +
               " exceeds warn_response_length " + std::to_string(o.warn_response_length) +
               ": the policy may be reward hacking");
    const bool log_step = done % st.log_every == 0 || done == o.max_iterations;
    if (ctx.is_root() && log_step) {
      nlohmann::json rec = {
          {"step", done},
          {"split", "train"},
          {"reward_mean", reward_mean},
          {"reward_std", std::sqrt(std::max(0.0, sums[kRewardSq] / responses - reward_mean * reward_mean))},
          {"kl", kl_per_seq},
          {"kl_coef", coef_used},
          {"entropy", sums[kEntropy] / minibatches},
          {"policy_loss", sums[kPolicyLoss] / minibatches},
          {"value_loss", sums[kValueLoss] / minibatches},
          {"clip_fraction", sums[kClipFrac] / minibatches},
          {"value_clip_fraction", sums[kValueClipFrac] / minibatches},
          {"approx_kl", sums[kApproxKl] / minibatches},
          {"explained_variance", sums[kExplainedVar] / world},
          {"response_length", length},
          {"actor_lr", actor_lr},
          {"time_generate_s", gen_s},
          {"time_score_s", score_s},
          {"time_reference_s", reference_s},
          {"time_train_s", train_s},
          {"generate_tokens_per_s", sums[kTokens] / std::max(gen_s, 1e-9)},
          {"tokens_per_s", (sums[kTokens] + sums[kPromptTokens]) / std::max(iter_s, 1e-9)}};
      log.write(rec);
    }
    core::progress_step(done);
    progress.update(done, {{"reward", reward_mean}, {"kl", kl_per_seq}, {"len", length}},
                    sums[kTokens] + sums[kPromptTokens], log_step);
    const bool last = done == o.max_iterations;
    if (eval_prompts && ((st.eval_every > 0 && done % st.eval_every == 0) || last)) {
      const double eval_reward = evaluate_prompts(ctx, m, *eval_prompts, spec, *policy.tok, *reward_source);
      if (ctx.is_root()) log.write({{"step", done}, {"split", "eval"}, {"reward_mean", eval_reward}});
      ctx.log("iteration " + std::to_string(done) + " eval reward (greedy) " + std::to_string(eval_reward));
    }
    if ((st.checkpoint_every > 0 && done % st.checkpoint_every == 0) || last) {
      const auto s = normalizer.state();
      extra = {{"kl_coef", kl_ctl.coef()}, {"normalizer", {s.count, s.mean, s.m2}}};
      save_checkpoint(ctx, state, done);
    }
  }
  progress.finish();

  // ---- output: the actor adapter (what later stages and eval load), the critic beside it ---------------
  publish_final(ctx, policy.lineage, [&](const std::string& dir) {
    lora::save_peft(m, actor, dir, policy.lineage.base_model);
    lora::save_peft(m, critic, dir + "/critic", policy.lineage.base_model);
    io::write_safetensors(dir + "/critic/value_head.safetensors",
                          {{"weight", value_head->weight}, {"bias", value_head->bias}});
  });
}

}  // namespace reglage::trainers
