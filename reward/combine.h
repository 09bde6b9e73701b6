// Weighted sums of reward sources, and reward normalisation.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "reward/reward_source.h"

namespace reglage::reward {

// sum_i weight_i * part_i(x), elementwise; each part scores the whole batch once. Throws reglage::Error when
// parts is empty, a part is null or a weight is not finite; score() throws naming the part (index and
// describe()) when a part returns a different number of rewards than inputs. describe(): "sum of (w * part, ...)".
// Each reward clamped to [-clip, clip]; clip <= 0 returns them unchanged.
std::vector<double> clip_rewards(std::vector<double> rewards, double clip);

std::unique_ptr<RewardSource> make_sum_source(std::vector<std::pair<double, std::unique_ptr<RewardSource>>> parts);

// Running mean/variance of rewards seen so far (Welford, in double), used to whiten rewards, optionally
// clipped. Its state goes into checkpoints.
class RewardNormalizer {
 public:
  struct State {
    int64_t count = 0;
    double mean = 0.0;
    double m2 = 0.0;  // sum of squared deviations
  };
  explicit RewardNormalizer(double clip = 0.0) : clip_(clip) {}
  // Adds the batch to the statistics, then returns (r - mean) / (std + 1e-8), clipped to [-clip, clip] when
  // clip > 0. std is the population std over every reward seen so far, this batch included (sqrt(m2 / count)),
  // so the very first single reward maps to 0. A non-finite reward throws reglage::Error and adds nothing.
  std::vector<double> normalize(const std::vector<double>& rewards);
  // The same in two steps, for a batch spread over ranks: merge the batch's count, mean and m2 (all-reduced
  // by the caller; Chan et al.'s parallel update), then apply() whitens (and clips) each rank's rewards with
  // the merged statistics. merge throws on non-finite or negative input.
  void merge(int64_t count, double mean, double m2);
  std::vector<double> apply(const std::vector<double>& rewards) const;
  State state() const { return state_; }
  void restore(const State& s) { state_ = s; }

 private:
  double clip_;
  State state_;
};

}  // namespace reglage::reward
