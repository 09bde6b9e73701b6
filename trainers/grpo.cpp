// GRPO stage: group relative policy optimisation (Shao et al. 2024) from any reward source, no critic.
//   mpirun -np N reglage run configs/demo_grpo.yaml      (a stage with type: grpo, usually init_from: sft)
// The policy is the shared base (with the init_from stage merged) plus a LoRA adapter named after the stage;
// the reference policy is the same model with the adapter off (the init_from policy, frozen). Each
// iteration takes rollout_batch_size prompts; every rank gets whole prompts and samples group_size responses
// for each (KV cache, per-token log-probs), so a group never spans ranks. The responses are scored, each
// response's advantage is its reward standardised within its group, (r - mean) / (std + eps), the same for
// every token; then ppo_epochs passes over shuffled minibatches minimise the clipped objective plus
// beta x k3 KL to the reference (framework/rl/grpo_math.h), gradients all-reduced across ranks. Output in
// run_dir/<stage>/final/: the adapter (PEFT) and the lineage, loadable like an sft stage's.
#include <chrono>
#include <cmath>

#include "framework/core/error.h"
#include "framework/core/progress.h"
#include "framework/data/prompt_data.h"
#include "framework/lora/adapter.h"
#include "framework/metrics/metrics_log.h"
#include "framework/metrics/progress_line.h"
#include "framework/rl/grpo_math.h"
#include "framework/rl/ppo_math.h"
#include "framework/rl/preference_math.h"
#include "reward/combine.h"
#include "reward/reward_factory.h"
#include "trainers/policy_setup.h"
#include "trainers/ppo_rollout.h"
#include "trainers/train_state.h"

namespace reglage::trainers {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// (r - group mean) / (group std + eps): eps keeps a group whose rewards barely differ from blowing up.
constexpr double kAdvantageEps = 1e-4;

// Sums of per-iteration statistics across ranks, in one collective.
enum Stat : size_t {
  kResponses, kRewardSum, kRewardSq, kGroups, kFlatGroups, kAdvAbsSum, kKlSum, kTokens, kPromptTokens, kLoss,
  kPolicyLoss, kKlLoss, kEntropy, kClipFrac, kGradNorm, kMinibatches, kNumStats
};
struct IterationSums {
  std::vector<double> v = std::vector<double>(kNumStats, 0.0);
  void add(Stat i, double x) { v[i] += x; }
  void all_reduce(dist::Communicator& comm) {
    auto t = torch::tensor(v, torch::kFloat64);
    comm.all_reduce_sum(t, "allreduce grpo metrics");
    for (size_t i = 0; i < v.size(); ++i) v[i] = t[int64_t(i)].item<double>();
  }
  double operator[](Stat i) const { return v[i]; }
};


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

}  // namespace

void run_grpo(StageContext& ctx) {
  const auto& cfg = ctx.pipeline;
  const auto& st = ctx.stage;
  const auto& o = st.ppo;  // the ppo keys grpo shares (config/pipeline_config.h, GrpoSettings)
  const auto& g = st.grpo;
  const int rank = ctx.comm.rank(), world = ctx.comm.size();

  // ---- setup: one base + the stage's adapter (reference = adapter off), reward, prompts, optimizer -------
  Policy policy = load_policy(ctx);
  auto& m = policy.model;
  Trainable trainable = setup_trainable(ctx, m);  // the stage's LoRA adapter (validated: train: lora)
  auto& params = trainable.params;

  reward::RewardBuildContext reward_ctx{cfg.run_dir, cfg.model.path, m, policy.lineage};
  auto reward_source = reward::make_reward_source(st.reward, reward_ctx, "stages." + st.name + ".reward");
  reward::RewardNormalizer normalizer(st.reward.clip);

  const auto opt = prompt_data_options(st, m->config().max_seq_len);
  const auto prompts = data::load_prompt_jsonl(st.data, *policy.tok, opt);
  check_step_memory(ctx, m->config(), std::max<int64_t>(1, st.ppo.minibatch_size / world),
                    longest_sequence(prompts) + st.ppo.max_new_tokens);
  std::optional<data::PromptDataset> eval_prompts;
  if (!st.eval_data.empty()) eval_prompts = data::load_prompt_jsonl(st.eval_data, *policy.tok, opt);

  train::AdamW optimizer(params, trainable.names, adamw_config(st));
  data::DataSampler sampler(int64_t(prompts.rows.size()), cfg.seed);
  torch::manual_seed(cfg.seed * 1000003ULL + uint64_t(rank));  // LoRA dropout: a stream per rank

  // ---- resume --------------------------------------------------------------------------------------
  nlohmann::json extra = {{"normalizer", {0, 0.0, 0.0}}};
  TrainState state{params, trainable.names, optimizer, sampler, nullptr, &extra};
  int64_t start = 0;
  if (auto ckpt = load_latest_checkpoint(ctx, state)) {
    start = *ckpt;
    const auto& n = extra.at("normalizer");
    normalizer.restore({n.at(0).get<int64_t>(), n.at(1).get<double>(), n.at(2).get<double>()});
  }
  dist::broadcast_tensors(ctx.comm, params, 0, "broadcast weights");
  metrics::MetricsLog log;
  if (ctx.is_root()) log = metrics::MetricsLog(ctx.metrics_path(), start);
  ctx.log(start > 0 ? "resuming at iteration " + std::to_string(start) + " of " + std::to_string(o.max_iterations)
                    : "grpo: " + std::to_string(o.max_iterations) + " iterations of " +
                          std::to_string(o.rollout_batch_size) + " prompts x " + std::to_string(g.group_size) +
                          " responses, beta " + std::to_string(g.beta) + ", " + std::to_string(prompts.rows.size()) +
                          " prompts, " + std::to_string(world) + " rank(s); reward: " + reward_source->describe());

  RolloutSpec spec;
  spec.actor = trainable.active;
  spec.max_new_tokens = o.max_new_tokens;
  spec.temperature = o.temperature;
  spec.top_p = o.top_p;
  spec.eos_id = policy.tok->eos_id();
  spec.pad_id = std::max<int64_t>(policy.tok->eos_id(), 0);

  // ---- the loop: rollout groups, score, group advantages, epochs of clipped updates, log, checkpoint ----
  core::progress_stage(st.name, o.max_iterations);
  core::progress_step(start);
  metrics::ProgressLine progress(st.name, "iteration", o.max_iterations, start, ctx.progress_mode(), std::cout);
  for (int64_t it = start; it < o.max_iterations; ++it) {
    const int64_t done = it + 1;
    const auto t_iter = Clock::now();
    const double lr = train::scheduled_lr(it, o.max_iterations, o.actor_lr, st.warmup_steps, st.schedule,
                                          st.min_lr_ratio);

    // 1. rollouts: this rank's whole prompts, each repeated group_size times (a group = consecutive rows)
    const auto my_prompts = data::shard(sampler.next_global_batch(o.rollout_batch_size), rank, world);
    std::vector<int64_t> rows;
    for (int64_t p : my_prompts)
      for (int64_t k = 0; k < g.group_size; ++k) rows.push_back(p);
    const auto t_gen = Clock::now();
    spec.seed = cfg.seed * 0x9E3779B97F4A7C15ULL + uint64_t(it) * 1000003ULL + uint64_t(rank);
    Rollout ro = sample_rollout(m, prompts, rows, spec, *policy.tok);  // every row its own sampling stream
    const double gen_s = seconds_since(t_gen);

    // 2. scores (raw, then normalised/clipped) and group advantages
    const auto t_score = Clock::now();
    const auto [raw, shaped, raw_sum, raw_sq] = score_rollout(ctx, *reward_source, normalizer, ro, done);
    // Groups are whole on this rank, so advantages need no communication.
    auto advantages = rl::group_advantages(torch::tensor(shaped, torch::kFloat64), g.group_size, kAdvantageEps)
                          .to(torch::kFloat32);  // (n)
    const double score_s = seconds_since(t_score);

    // 3. old (policy at rollout time) and reference (adapter off) log-probs, no grad
    const auto t_ref = Clock::now();
    evaluate_logprobs(m, ro, spec);
    auto kl = rl::kl_estimate(ro.old_logp, ro.ref_logp, config::KlEstimator::kK3) * ro.mask;  // (n, R)
    const double reference_s = seconds_since(t_ref);
    IterationSums sums;
    sums.add(kResponses, double(raw.size()));
    sums.add(kRewardSum, raw_sum);
    sums.add(kRewardSq, raw_sq);
    sums.add(kGroups, double(my_prompts.size()));
    sums.add(kFlatGroups, double(flat_groups(shaped, g.group_size)));
    sums.add(kAdvAbsSum, advantages.abs().sum().item<double>());
    sums.add(kKlSum, kl.sum().item<double>());
    sums.add(kTokens, ro.mask.sum().item<double>());
    sums.add(kPromptTokens, double(ro.prompt_tokens));

    // 4. ppo_epochs passes over shuffled minibatches of responses. The loss is the mean over responses of
    // each response's mean over its tokens (GRPO paper); every rank holds minibatch_size / world responses,
    // so dividing by world before the summing all-reduce gives the mean over the global minibatch.
    const auto t_train = Clock::now();
    m->train();
    const int64_t n = int64_t(rows.size()), mb = o.minibatch_size / world;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(cfg.seed * 31 + uint64_t(it) * 1009 + uint64_t(rank));
    for (int64_t epoch = 0; epoch < o.ppo_epochs; ++epoch) {
      auto order = torch::randperm(n, gen, torch::kLong);
      for (int64_t s = 0; s + mb <= n; s += mb) {
        auto idx = order.narrow(0, s, mb);
        auto out = forward_policy(m, ro, idx, spec);  // logp, entropy (b, R), with grad
        auto mask = ro.mask.index_select(0, idx);     // (b, R)
        auto r = rl::grpo_loss(out.logp, ro.old_logp.index_select(0, idx), ro.ref_logp.index_select(0, idx),
                               advantages.index_select(0, idx), mask, o.clip_range, g.beta);
        auto entropy = rl::masked_mean(out.entropy, mask);
        auto loss = r.loss - o.entropy_coef * entropy;
        check_finite(st, done, "loss", loss.item<double>());
        (loss / double(world)).backward();
        dist::all_reduce_gradients(ctx.comm, params);  // sync point
        const double grad_norm = train::clip_grad_norm(params, st.max_grad_norm);
        check_finite(st, done, "grad norm", grad_norm);
        optimizer.step(lr);
        optimizer.zero_grad();
        sums.add(kLoss, loss.item<double>());
        sums.add(kPolicyLoss, r.policy_loss);
        sums.add(kKlLoss, r.kl);
        sums.add(kEntropy, entropy.item<double>());
        sums.add(kClipFrac, r.clip_fraction);
        sums.add(kGradNorm, grad_norm / double(world));  // the same on every rank (after the all-reduce)
        sums.add(kMinibatches, 1.0);
      }
    }
    const double train_s = seconds_since(t_train);

    // 5. global metrics, guards, log, eval, checkpoint
    sums.all_reduce(ctx.comm);
    const double responses = sums[kResponses], minibatches = std::max(sums[kMinibatches], 1.0);
    const double reward_mean = sums[kRewardSum] / responses;
    const double kl_per_seq = sums[kKlSum] / responses;
    const double length = sums[kTokens] / responses;
    check_finite(st, done, "KL", kl_per_seq);
    const double iter_s = seconds_since(t_iter);
    if (o.warn_kl > 0 && kl_per_seq > o.warn_kl)
      ctx.warn("iteration " + std::to_string(done) + ": KL to the reference " + std::to_string(kl_per_seq) +
               " exceeds warn_kl " + std::to_string(o.warn_kl) + ": the policy may be reward hacking");
    if (o.warn_response_length > 0 && length > double(o.warn_response_length))
      ctx.warn("iteration " + std::to_string(done) + ": mean response length " + std::to_string(length) +
               " exceeds warn_response_length " + std::to_string(o.warn_response_length) +
               ": the policy may be reward hacking");
    const bool log_step = done % st.log_every == 0 || done == o.max_iterations;
    if (ctx.is_root() && log_step) {  // rank 0 only
      nlohmann::json rec = {
          {"step", done},
          {"split", "train"},
          {"reward_mean", reward_mean},
          {"reward_std", std::sqrt(std::max(0.0, sums[kRewardSq] / responses - reward_mean * reward_mean))},
          {"zero_std_fraction", sums[kFlatGroups] / std::max(sums[kGroups], 1.0)},
          {"advantage_abs_mean", sums[kAdvAbsSum] / responses},
          {"kl", kl_per_seq},
          {"kl_per_token", sums[kKlSum] / std::max(sums[kTokens], 1.0)},
          {"beta", g.beta},
          {"loss", sums[kLoss] / minibatches},
          {"policy_loss", sums[kPolicyLoss] / minibatches},
          {"kl_loss", sums[kKlLoss] / minibatches},
          {"entropy", sums[kEntropy] / minibatches},
          {"clip_fraction", sums[kClipFrac] / minibatches},
          {"grad_norm", sums[kGradNorm] / minibatches},
          {"response_length", length},
          {"actor_lr", lr},
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
      extra = {{"normalizer", {s.count, s.mean, s.m2}}};
      save_checkpoint(ctx, state, done);
    }
  }
  progress.finish();

  // ---- output: the adapter (PEFT), loadable like an sft stage's ------------------------------------
  publish_final(ctx, policy.lineage,
                [&](const std::string& dir) { lora::save_peft(m, st.name, dir, policy.lineage.base_model); });
}

}  // namespace reglage::trainers
