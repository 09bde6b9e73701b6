#include "trainers/rl_iteration.h"

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cmath>

#include "framework/data/prompt_data.h"
#include "framework/rl/ppo_math.h"
#include "reward/combine.h"
#include "reward/reward_factory.h"
#include "trainers/stage_session.h"
#include "trainers/stage_traits.h"

namespace reglage::trainers {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Mean KL per response and mean response length above the stage's warn_* bounds: a policy that found a
// way to please the reward without writing good text drifts far from the reference, or rambles.
void warn_reward_hacking(const StageContext& ctx, int64_t done, double kl_per_seq, double length) {
  const auto& o = ctx.stage.ppo;
  if (o.warn_kl > 0 && kl_per_seq > o.warn_kl)
    ctx.warn("iteration " + std::to_string(done) + ": KL to the reference " + std::to_string(kl_per_seq) +
             " exceeds warn_kl " + std::to_string(o.warn_kl) + ": the policy may be reward hacking");
  if (o.warn_response_length > 0 && length > double(o.warn_response_length))
    ctx.warn("iteration " + std::to_string(done) + ": mean response length " + std::to_string(length) +
             " exceeds warn_response_length " + std::to_string(o.warn_response_length) +
             ": the policy may be reward hacking");
}

}  // namespace

void IterationSums::all_reduce(dist::Communicator& comm, const std::string& op) {
  auto t = torch::tensor(v, torch::kFloat64);
  comm.all_reduce_sum(t, op);
  for (size_t i = 0; i < v.size(); ++i) v[i] = t[int64_t(i)].item<double>();
}

void run_rl_stage(StageContext& ctx, const RlAlgorithmFactory& make_algorithm) {
  const auto& cfg = ctx.pipeline;
  const auto& st = ctx.stage;
  const auto& o = st.ppo;  // the keys ppo and grpo share
  const int rank = ctx.comm.rank(), world = ctx.comm.size();
  Policy policy = load_policy(ctx);
  auto& m = policy.model;
  const std::unique_ptr<RlAlgorithm> algorithm = make_algorithm(policy);
  RlAlgorithm& algo = *algorithm;

  // ---- setup: reward (on the shared base when it can), prompts, resume -----------------------------------
  reward::RewardBuildContext reward_ctx{cfg.run_dir, cfg.model.path, m, policy.lineage};
  auto reward_source = reward::make_reward_source(st.reward, reward_ctx, "stages." + st.name + ".reward");
  reward::RewardNormalizer normalizer(st.reward.clip);
  const auto opt = stage_data_options(st, m->config().max_seq_len);
  const auto prompts = data::load_prompt_jsonl(st.data, *policy.tok, opt);
  check_step_memory(ctx, m->config(), std::max<int64_t>(1, o.minibatch_size / world),
                    longest_sequence(prompts) + o.max_new_tokens);
  std::optional<data::PromptDataset> eval_prompts;
  if (!st.eval_data.empty()) eval_prompts = data::load_prompt_jsonl(st.eval_data, *policy.tok, opt);

  data::DataSampler sampler(int64_t(prompts.rows.size()), cfg.seed);
  nlohmann::json extra = {{"normalizer", {0, 0.0, 0.0}}};
  algo.save_extra(extra);
  TrainState state = algo.train_state(sampler, &extra);
  StageSession session(ctx, o.max_iterations, "iteration");
  const int64_t start = session.resume(state, algo.describe() + ", " + std::to_string(prompts.rows.size()) +
                                                  " prompts, " + std::to_string(world) +
                                                  " rank(s); reward: " + reward_source->describe());
  if (session.resumed()) {
    const auto& n = extra.at("normalizer");
    normalizer.restore({n.at(0).get<int64_t>(), n.at(1).get<double>(), n.at(2).get<double>()});
    algo.restore_extra(extra);
  }

  RolloutSpec spec;
  spec.actor = {st.name};
  spec.critic = algo.critic();
  spec.max_new_tokens = o.max_new_tokens;
  spec.temperature = o.temperature;
  spec.top_p = o.top_p;
  spec.eos_id = policy.tok->eos_id();
  spec.pad_id = std::max<int64_t>(policy.tok->eos_id(), 0);

  // ---- the loop: rollout, reward, log-probs, advantages, minibatch updates, bookkeeping ----------------
  for (int64_t it = start; it < o.max_iterations; ++it) {
    const IterationInfo info{it, it + 1,
                             train::scheduled_lr(it, o.max_iterations, o.actor_lr, st.warmup_steps, st.schedule,
                                                 st.min_lr_ratio)};
    const int64_t done = info.done;
    const auto t_iter = Clock::now();

    // 1. rollout: every row its own sampling stream
    const auto rows = algo.rollout_rows(sampler.next_global_batch(o.rollout_batch_size), rank, world);
    const auto t_gen = Clock::now();
    spec.seed = cfg.seed * 0x9E3779B97F4A7C15ULL + uint64_t(it) * 1000003ULL + uint64_t(rank);
    Rollout ro = sample_rollout(m, prompts, rows, spec, *policy.tok);
    const double gen_s = seconds_since(t_gen);

    // 2. scores: raw, then normalised (moments all-reduced) or clipped
    const auto t_score = Clock::now();
    const auto [raw, shaped, raw_sum, raw_sq] = score_rollout(ctx, *reward_source, normalizer, ro, done);
    const double score_s = seconds_since(t_score);

    // 3. old and reference log-probs (and values), no grad; the per-token KL to the reference
    const auto t_ref = Clock::now();
    algo.evaluate(ro, spec);
    auto kl = rl::kl_estimate(ro.old_logp, ro.ref_logp, algo.kl_estimator()) * ro.mask;  // (n, R)
    const double reference_s = seconds_since(t_ref);
    IterationSums sums(algo.own_stats());
    sums.add(kResponses, double(raw.size()));
    sums.add(kRewardSum, raw_sum);
    sums.add(kRewardSq, raw_sq);
    sums.add(kKlSum, kl.sum().item<double>());
    sums.add(kTokens, ro.mask.sum().item<double>());
    sums.add(kPromptTokens, double(ro.prompt_tokens));

    // 4. advantages: the algorithm's step
    const auto t_train = Clock::now();
    const auto advantages = algo.advantages(ro, shaped, kl, sums);

    // 5. ppo_epochs passes over shuffled minibatches of this rank's rows (minibatch_size / world each)
    m->train();
    const int64_t n = int64_t(rows.size()), mb = o.minibatch_size / world;
    auto gen = at::make_generator<at::CPUGeneratorImpl>(cfg.seed * 31 + uint64_t(it) * 1009 + uint64_t(rank));
    for (int64_t epoch = 0; epoch < o.ppo_epochs; ++epoch) {
      auto order = torch::randperm(n, gen, torch::kLong);
      for (int64_t s = 0; s + mb <= n; s += mb) algo.update(ro, order.narrow(0, s, mb), advantages, spec, info, sums);
    }
    const double train_s = seconds_since(t_train);

    // 6. global metrics, guards, log, eval, checkpoint
    sums.all_reduce(ctx.comm, "allreduce iteration metrics");
    const double responses = sums[kResponses], minibatches = std::max(sums[kMinibatches], 1.0);
    const double reward_mean = sums[kRewardSum] / responses;
    const double kl_per_seq = sums[kKlSum] / responses;
    const double length = sums[kTokens] / responses;
    check_finite(st, done, "KL", kl_per_seq);
    nlohmann::json rec = algo.end_iteration(sums, kl_per_seq);  // every rank (PPO's KL controller)
    const double iter_s = seconds_since(t_iter);
    warn_reward_hacking(ctx, done, kl_per_seq, length);
    if (session.log_due(done)) {
      const nlohmann::json common = {
          {"step", done},
          {"split", "train"},
          {"reward_mean", reward_mean},
          {"reward_std", std::sqrt(std::max(0.0, sums[kRewardSq] / responses - reward_mean * reward_mean))},
          {"kl", kl_per_seq},
          {"entropy", sums[kEntropy] / minibatches},
          {"policy_loss", sums[kPolicyLoss] / minibatches},
          {"clip_fraction", sums[kClipFrac] / minibatches},
          {"response_length", length},
          {"actor_lr", info.actor_lr},
          {"time_generate_s", gen_s},
          {"time_score_s", score_s},
          {"time_reference_s", reference_s},
          {"time_train_s", train_s},
          {"generate_tokens_per_s", sums[kTokens] / std::max(gen_s, 1e-9)},
          {"tokens_per_s", (sums[kTokens] + sums[kPromptTokens]) / std::max(iter_s, 1e-9)}};
      rec.update(common);
      session.record(rec);
    }
    session.show(done, {{"reward", reward_mean}, {"kl", kl_per_seq}, {"len", length}},
                 sums[kTokens] + sums[kPromptTokens]);
    if (eval_prompts && session.due(st.eval_every, done)) {
      const double eval_reward = evaluate_prompts(ctx, m, *eval_prompts, spec, *policy.tok, *reward_source);
      session.record({{"step", done}, {"split", "eval"}, {"reward_mean", eval_reward}});
      ctx.log("iteration " + std::to_string(done) + " eval reward (greedy) " + std::to_string(eval_reward));
    }
    const auto s = normalizer.state();
    extra = {{"normalizer", {s.count, s.mean, s.m2}}};
    algo.save_extra(extra);
    session.maybe_checkpoint(done);
  }
  session.finish();

  // ---- output: the actor's adapter (what later stages and eval load), the algorithm's files beside it ----
  session.publish(policy, [&](const std::string& dir) { algo.write_output(dir); });
}

}  // namespace reglage::trainers
