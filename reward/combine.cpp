// Weighted sums of reward sources, and the running reward normaliser.
#include "reward/combine.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "framework/core/error.h"

namespace reglage::reward {
namespace {

class SumSource : public RewardSource {
 public:
  explicit SumSource(std::vector<std::pair<double, std::unique_ptr<RewardSource>>> parts) : parts_(std::move(parts)) {}

  // Each part scores the whole batch once; the results are added elementwise with the part's weight.
  std::vector<double> score(const std::vector<RewardInput>& batch) override {
    std::vector<double> out(batch.size(), 0.0);
    for (size_t i = 0; i < parts_.size(); ++i) {
      const auto& [weight, part] = parts_[i];
      const std::vector<double> r = part->score(batch);
      if (r.size() != batch.size())
        fail("sum part ", i, " (", part->describe(), "): returned ", r.size(), " rewards for a batch of ",
             batch.size(), " (expected one per input)");
      for (size_t b = 0; b < batch.size(); ++b) out[b] += weight * r[b];
    }
    return out;
  }

  // "sum of (1 * rules (3 checks), 0.5 * http http://...)"
  std::string describe() const override {
    std::ostringstream out;
    out << "sum of (";
    for (size_t i = 0; i < parts_.size(); ++i)
      out << (i ? ", " : "") << parts_[i].first << " * " << parts_[i].second->describe();
    out << ")";
    return out.str();
  }

 private:
  std::vector<std::pair<double, std::unique_ptr<RewardSource>>> parts_;
};

}  // namespace

std::unique_ptr<RewardSource> make_sum_source(std::vector<std::pair<double, std::unique_ptr<RewardSource>>> parts) {
  if (parts.empty()) fail("sum source: no parts (expected at least one weighted source)");
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!parts[i].second) fail("sum source: part ", i, " is null (expected a reward source)");
    if (!std::isfinite(parts[i].first))
      fail("sum source: part ", i, " (", parts[i].second->describe(), "): weight = ", parts[i].first,
           " (must be finite)");
  }
  return std::make_unique<SumSource>(std::move(parts));
}

std::vector<double> clip_rewards(std::vector<double> rewards, double clip) {
  if (clip > 0)
    for (double& r : rewards) r = std::min(std::max(r, -clip), clip);
  return rewards;
}

std::vector<double> RewardNormalizer::normalize(const std::vector<double>& rewards) {
  // A non-finite reward would poison the running statistics for the rest of training.
  for (size_t i = 0; i < rewards.size(); ++i)
    if (!std::isfinite(rewards[i])) fail("reward normalizer: reward[", i, "] = ", rewards[i], " (must be finite)");
  // Welford update with the whole batch first, so the batch is whitened with statistics that include it.
  for (double r : rewards) {
    state_.count += 1;
    const double delta = r - state_.mean;
    state_.mean += delta / double(state_.count);
    state_.m2 += delta * (r - state_.mean);
  }
  return apply(rewards);
}

void RewardNormalizer::merge(int64_t count, double mean, double m2) {
  if (count < 0 || !std::isfinite(mean) || !std::isfinite(m2) || m2 < -1e-9 * std::max(1.0, std::fabs(mean)))
    fail("reward normalizer: batch statistics count ", count, ", mean ", mean, ", m2 ", m2,
         " (expected count >= 0 and finite mean, m2 >= 0; a reward was not finite)");
  if (count == 0) return;
  const double n_a = double(state_.count), n_b = double(count), n = n_a + n_b;
  const double delta = mean - state_.mean;
  state_.mean += delta * n_b / n;
  state_.m2 += std::max(m2, 0.0) + delta * delta * n_a * n_b / n;
  state_.count += count;
}

std::vector<double> RewardNormalizer::apply(const std::vector<double>& rewards) const {
  // Population std over everything seen so far (0 after a single reward, so that output is 0).
  const double std = state_.count > 0 ? std::sqrt(state_.m2 / double(state_.count)) : 0.0;
  std::vector<double> out(rewards.size());
  for (size_t i = 0; i < rewards.size(); ++i) {
    double z = (rewards[i] - state_.mean) / (std + 1e-8);
    if (clip_ > 0) z = std::min(std::max(z, -clip_), clip_);
    out[i] = z;
  }
  return out;
}

}  // namespace reglage::reward
