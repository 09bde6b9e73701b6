// The iteration PPO and GRPO share, as OpenRLHF's one experience maker serves both:
//   1. rollout    this rank's rows of the iteration's prompts, one sampled response each (actor, KV cache)
//   2. reward     raw scores from the stage's reward source, then normalised or clipped
//   3. log-probs  old (actor at rollout time) and reference (adapter off) per token, no grad; the KL per token
//   4. ADVANTAGES the step that differs: PPO shapes per-token rewards with the KL penalty, runs GAE with its
//                 critic and whitens over the global batch; GRPO standardises each reward within its group
//   5. updates    ppo_epochs passes over shuffled minibatches of the rows, the algorithm's loss, gradients
//                 all-reduced
//   6. bookkeeping global metrics, reward-hacking warnings, the metrics log, eval, checkpoint
// An RlAlgorithm (ppo.cpp, grpo.cpp) supplies the row layout of 1, the passes of 3, all of 4, the update of
// 5 and its own metrics; run_rl_stage owns the rest (reward source, prompts, resume, the loop, the output).
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trainers/policy_setup.h"
#include "trainers/ppo_rollout.h"
#include "trainers/train_state.h"

namespace reglage::trainers {

// Per-iteration sums over this rank's responses and minibatches, summed across ranks in one collective.
// The skeleton's slots come first; an algorithm's own start at kCommonStats.
enum CommonStat : size_t {
  kResponses, kRewardSum, kRewardSq, kKlSum, kTokens, kPromptTokens, kMinibatches, kEntropy, kPolicyLoss,
  kClipFrac, kCommonStats
};
struct IterationSums {
  std::vector<double> v;
  explicit IterationSums(size_t own_stats) : v(kCommonStats + own_stats, 0.0) {}
  void add(size_t i, double x) { v[i] += x; }
  double operator[](size_t i) const { return v[i]; }
  void all_reduce(dist::Communicator& comm, const std::string& op);
};

// Where the loop is: iteration it (0-based), done = it + 1, and the actor's learning rate for it.
struct IterationInfo {
  int64_t it = 0, done = 0;
  double actor_lr = 0;
};

class RlAlgorithm {
 public:
  virtual ~RlAlgorithm() = default;
  // The head of the stage's first log line, e.g. "ppo: 100 iterations of 64 responses".
  virtual std::string describe() const = 0;
  // The trainable tensors and their optimizer(s), over `sampler`, with stage state in *extra.
  virtual TrainState train_state(data::DataSampler& sampler, nlohmann::json* extra) = 0;
  // The algorithm's part of the checkpoint's extra state (PPO: the KL coefficient).
  virtual void save_extra(nlohmann::json& /*extra*/) const {}
  virtual void restore_extra(const nlohmann::json& /*extra*/) {}
  // The critic's adapter, for RolloutSpec::critic; none without a critic.
  virtual model::AdapterSet critic() const { return {}; }
  virtual config::KlEstimator kl_estimator() const = 0;  // the per-token KL estimate of step 3
  // How many IterationSums slots the algorithm adds.
  virtual size_t own_stats() const = 0;

  // 1. This rank's rows (indices into the prompts) for the iteration's global prompt batch.
  virtual std::vector<int64_t> rollout_rows(const std::vector<int64_t>& prompts, int rank, int world) const = 0;
  // 3. Fills ro.old_logp and ro.ref_logp (and ro.values with a critic) without gradients.
  virtual void evaluate(Rollout& ro, const RolloutSpec& spec) = 0;
  // 4. The advantages of the rows from the shaped rewards (n) and the per-token KL (n, R); may be collective.
  virtual torch::Tensor advantages(const Rollout& ro, const std::vector<double>& shaped, const torch::Tensor& kl,
                                   IterationSums& sums) = 0;
  // 5. One update on the rows `idx` (b): loss, backward, all-reduce, clip, optimizer step(s); adds its sums.
  virtual void update(const Rollout& ro, const torch::Tensor& idx, const torch::Tensor& advantages,
                      const RolloutSpec& spec, const IterationInfo& info, IterationSums& sums) = 0;
  // 6. On every rank, after the sums are global: the algorithm's fields of the train record.
  virtual nlohmann::json end_iteration(const IterationSums& sums, double kl_per_seq) = 0;
  // Files beside the actor's adapter in the stage output (PPO: the critic).
  virtual void write_output(const std::string& /*dir*/) {}
};

// Runs a ppo or grpo stage to its end: loads the policy, has `make_algorithm` put the algorithm's adapters
// (and heads, optimizers) on it, then runs the iterations and publishes the output.
using RlAlgorithmFactory = std::function<std::unique_ptr<RlAlgorithm>(Policy& policy)>;
void run_rl_stage(StageContext& ctx, const RlAlgorithmFactory& make_algorithm);

}  // namespace reglage::trainers
