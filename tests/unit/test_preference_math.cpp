// DPO, IPO, cDPO losses, sequence log-probabilities, GRPO group advantages and the k3 KL term, against
// values worked out by hand (in the comments).
#include <gtest/gtest.h>

#include <cmath>

#include "framework/rl/ppo_math.h"
#include "framework/rl/preference_math.h"

namespace reglage {
namespace {

torch::Tensor t(std::initializer_list<double> v) { return torch::tensor(std::vector<double>(v), torch::kFloat64); }

TEST(PreferenceMath, SequenceLogprobsCountOnlyTargets) {
  // One row, 3 positions, vocab 2. Position 0: logits (0, 0) -> p(0) = 1/2. Position 1: (ln 3, 0) ->
  // p(0) = 3/4. Position 2 is not counted (-100). Sum: ln(1/2) + ln(3/4) = ln(0.375) = -0.980829.
  auto logits = torch::tensor({0.0, 0.0, std::log(3.0), 0.0, 5.0, -5.0}, torch::kFloat64).view({1, 3, 2});
  auto targets = torch::tensor({0, 0, -100}, torch::kLong).view({1, 3});
  auto lp = rl::sequence_logprobs(logits, targets);
  ASSERT_EQ(lp.sizes(), torch::IntArrayRef({1}));
  EXPECT_NEAR(lp[0].item<double>(), std::log(0.375), 1e-12);
}

// pi_c - ref_c = +1, pi_r - ref_r = -1, beta = 0.1: rc = 0.1, rr = -0.1, h = 0.2.
struct Pair {
  torch::Tensor pi_c = t({-10.0}).requires_grad_(), pi_r = t({-12.0}).requires_grad_();
  torch::Tensor ref_c = t({-11.0}), ref_r = t({-11.0});
};

TEST(PreferenceMath, DpoSigmoidLossAndGradient) {
  Pair p;
  auto r = rl::dpo_loss(p.pi_c, p.pi_r, p.ref_c, p.ref_r, 0.1, config::LossType::kSigmoid, 0.0);
  // -log sigmoid(0.2) = log(1 + e^-0.2) = log(1.818731) = 0.598139
  EXPECT_NEAR(r.loss[0].item<double>(), 0.5981388693, 1e-9);
  EXPECT_NEAR(r.chosen_reward[0].item<double>(), 0.1, 1e-12);
  EXPECT_NEAR(r.rejected_reward[0].item<double>(), -0.1, 1e-12);
  r.loss.sum().backward();
  // d/dpi_c = -beta * sigmoid(-h) = -0.1 * 0.450166 = -0.0450166; d/dpi_r = +0.0450166
  EXPECT_NEAR(p.pi_c.grad()[0].item<double>(), -0.0450166003, 1e-9);
  EXPECT_NEAR(p.pi_r.grad()[0].item<double>(), 0.0450166003, 1e-9);
}

TEST(PreferenceMath, ConservativeDpoMixesBothLabels) {
  Pair p;
  auto r = rl::dpo_loss(p.pi_c, p.pi_r, p.ref_c, p.ref_r, 0.1, config::LossType::kCdpo, 0.1);
  // 0.9 * log(1 + e^-0.2) + 0.1 * log(1 + e^0.2) = 0.9 * 0.598139 + 0.1 * 0.798139 = 0.618139
  EXPECT_NEAR(r.loss[0].item<double>(), 0.9 * 0.5981388693 + 0.1 * 0.7981388693, 1e-9);
  EXPECT_NEAR(r.loss[0].item<double>(), 0.6181388693, 1e-9);
}

TEST(PreferenceMath, IpoIsASquareAroundOneOverTwoBeta) {
  Pair p;
  auto r = rl::dpo_loss(p.pi_c, p.pi_r, p.ref_c, p.ref_r, 0.1, config::LossType::kIpo, 0.0);
  // h / beta = 2, 1 / (2 beta) = 5: (2 - 5)^2 = 9; d/dpi_c = 2 * (2 - 5) = -6
  EXPECT_NEAR(r.loss[0].item<double>(), 9.0, 1e-9);
  r.loss.sum().backward();
  EXPECT_NEAR(p.pi_c.grad()[0].item<double>(), -6.0, 1e-9);
  EXPECT_NEAR(p.pi_r.grad()[0].item<double>(), 6.0, 1e-9);
}

TEST(PreferenceMath, ChosenNllIsPerTokenAndCarriesTheGradient) {
  // Summed log-probs -6 over 3 tokens and -3 over 1 token -> NLL per token 2 and 3; d/d pi_c = -1/tokens.
  auto pi_c = t({-6, -3}).requires_grad_(true);
  auto nll = rl::chosen_nll(pi_c, torch::tensor({3, 1}, torch::kInt64));
  EXPECT_NEAR(nll[0].item<double>(), 2.0, 1e-12);
  EXPECT_NEAR(nll[1].item<double>(), 3.0, 1e-12);
  nll.sum().backward();
  EXPECT_NEAR(pi_c.grad()[0].item<double>(), -1.0 / 3.0, 1e-12);
  EXPECT_NEAR(pi_c.grad()[1].item<double>(), -1.0, 1e-12);
  // A row without tokens divides by one.
  EXPECT_NEAR(rl::chosen_nll(t({-2}), torch::tensor({0}, torch::kInt64))[0].item<double>(), 2.0, 1e-12);
}

TEST(PreferenceMath, GroupAdvantagesPerGroup) {
  // Group 1: 1, 2, 3: mean 2, unbiased std 1 -> -1, 0, 1 (over 1 + eps). Group 2: all 5 -> 0, 0, 0.
  // Group 3: 0, 4, 8: mean 4, std 4 -> -1, 0, 1.
  auto a = rl::group_advantages(t({1, 2, 3, 5, 5, 5, 0, 4, 8}), 3, 1e-6);
  const double expect[] = {-1, 0, 1, 0, 0, 0, -1, 0, 1};
  for (int i = 0; i < 9; ++i) EXPECT_NEAR(a[i].item<double>(), expect[i] / (1.0 + (i >= 6 ? 0.25e-6 : 1e-6)), 1e-9) << i;
  EXPECT_THROW(rl::group_advantages(t({1, 2, 3, 4}), 3), std::exception);
  // A group of one has no spread: advantage 0.
  auto single = rl::group_advantages(t({7, -2}), 1);
  EXPECT_EQ(single[0].item<double>(), 0.0);
  EXPECT_EQ(single[1].item<double>(), 0.0);
}

TEST(PreferenceMath, K3KlTermValueAndGradient) {
  // logp = -1, ref = -2: k3 = e^(ref - logp) - 1 - (ref - logp) = e^-1 - 1 + 1 = 0.367879;
  // d/dlogp = 1 - e^(ref - logp) = 0.632121.
  auto logp = t({-1.0}).requires_grad_();
  auto k3 = rl::kl_estimate(logp, t({-2.0}), config::KlEstimator::kK3);
  EXPECT_NEAR(k3[0].item<double>(), std::exp(-1.0), 1e-12);
  k3.sum().backward();
  EXPECT_NEAR(logp.grad()[0].item<double>(), 1.0 - std::exp(-1.0), 1e-12);
}

}  // namespace
}  // namespace reglage
