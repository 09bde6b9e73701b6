// The PPO math against values worked out by hand (each in a comment): GAE, the KL estimators and shaped
// rewards, the clipped policy and value losses, entropy, explained variance, the adaptive KL coefficient and
// whitening on one process (tests/mpi/test_ppo_whiten.cpp checks whitening across ranks).
#include <cmath>

#include "framework/core/error.h"
#include "framework/rl/ppo_math.h"
#include "test_util.h"

namespace reglage::rl {
namespace {

torch::Tensor t2(std::vector<std::vector<float>> rows) {
  std::vector<torch::Tensor> out;
  for (auto& r : rows) out.push_back(torch::tensor(r, torch::kFloat32));
  return torch::stack(out);
}

void expect_row(const torch::Tensor& t, int64_t row, std::vector<double> expected, double tol = 1e-6) {
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_NEAR(t[row][int64_t(i)].item<double>(), expected[i], tol) << "row " << row << " col " << i;
}

// gamma 0.9, lam 0.8, r = [1, 0, 2], V = [0.5, 1.0, 0.2], all valid:
//   t=2: delta = 2 - 0.2 = 1.8                      A2 = 1.8
//   t=1: delta = 0 + 0.9 * 0.2 - 1.0 = -0.82         A1 = -0.82 + 0.72 * 1.8 = 0.476
//   t=0: delta = 1 + 0.9 * 1.0 - 0.5 = 1.4           A0 = 1.4 + 0.72 * 0.476 = 1.74272
//   returns = A + V = [2.24272, 1.476, 2.0]
// Row 2 is valid for 2 tokens (gamma = lam = 1); its padding holds junk that must not leak in:
//   t=1: delta = 1.0 - 0.3 = 0.7 (the episode ends)  A1 = 0.7
//   t=0: delta = 0.5 + 0.3 - 0.1 = 0.7               A0 = 0.7 + 0.7 = 1.4        returns [1.5, 1.0, 0]
TEST(PpoMath, GaeOnKnownSequences) {
  auto r = gae(t2({{1, 0, 2}}), t2({{0.5f, 1.0f, 0.2f}}), t2({{1, 1, 1}}), 0.9, 0.8);
  expect_row(r.advantages, 0, {1.74272, 0.476, 1.8});
  expect_row(r.returns, 0, {2.24272, 1.476, 2.0});
  auto p = gae(t2({{0.5f, 1.0f, 9.0f}}), t2({{0.1f, 0.3f, 7.0f}}), t2({{1, 1, 0}}), 1.0, 1.0);
  expect_row(p.advantages, 0, {1.4, 0.7, 0.0});
  expect_row(p.returns, 0, {1.5, 1.0, 0.0});
  // lam = 0 is one-step TD: A_t = delta_t.
  auto td = gae(t2({{1, 0, 2}}), t2({{0.5f, 1.0f, 0.2f}}), t2({{1, 1, 1}}), 0.9, 0.0);
  expect_row(td.advantages, 0, {1.4, -0.82, 1.8});
}

// logp = [-1, -2], ref = [-1.5, -1]:  k1 = [0.5, -1];  k3 with log_ratio = ref - logp = [-0.5, 1]:
//   exp(-0.5) - 1 + 0.5 = 0.1065306597,  e - 1 - 1 = 0.7182818285
TEST(PpoMath, KlEstimators) {
  auto logp = t2({{-1.0f, -2.0f}}), ref = t2({{-1.5f, -1.0f}});
  expect_row(kl_estimate(logp, ref, "k1"), 0, {0.5, -1.0});
  expect_row(kl_estimate(logp, ref, "k3"), 0, {0.1065306597, 0.7182818285});
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto a = torch::randn({64, 16}, gen), b = torch::randn({64, 16}, gen);
  EXPECT_GE(kl_estimate(a, b, "k3").min().item<double>(), 0.0);  // k3 is never negative
  EXPECT_EQ(kl_estimate(a, a, "k3").abs().max().item<double>(), 0.0);
  try {
    kl_estimate(logp, ref, "k2");
    ADD_FAILURE() << "k2 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'k2' (expected k1 or k3)"), std::string::npos) << e.what();
  }
}

// scores [2, -1], coef 0.5: row 0 = -0.5 * [0.1, 0.2, 0.3] + [0, 0, 2] = [-0.05, -0.1, 1.85];
// row 1 (2 valid) = -0.5 * [0.5, 0.4] + [0, -1] = [-0.25, -1.2], padding 0.
TEST(PpoMath, TokenRewardsPutTheScoreOnTheLastToken) {
  auto r = token_rewards(torch::tensor({2.0f, -1.0f}), t2({{0.1f, 0.2f, 0.3f}, {0.5f, 0.4f, 9.0f}}),
                         t2({{1, 1, 1}, {1, 1, 0}}), 0.5);
  expect_row(r, 0, {-0.05, -0.1, 1.85});
  expect_row(r, 1, {-0.25, -1.2, 0.0});
}

// c = 0.2. Token a: ratio 1.1, A = 1  -> max(-1.1, -1.1) = -1.1            (not clipped)
//          token b: ratio 1.5, A = 2  -> max(-3.0, -2.4) = -2.4            (clipped)
//          token c: ratio 0.5, A = -1 -> max(0.5, 0.8)   = 0.8             (clipped)
//          token d: ratio 1.5, A = -1 -> max(1.5, 1.2)   = 1.5             (not clipped: no benefit to cut)
//          token e: padding with ratio 10 and A = 100: ignored
// loss = (-1.1 - 2.4 + 0.8 + 1.5) / 4 = -0.3; clip fraction 2/4;
// approx_kl = mean((r - 1) - ln r) = (0.0046898018 + 0.0945348919 + 0.1931471806 + 0.0945348919) / 4
TEST(PpoMath, ClippedPolicyObjective) {
  auto old_logp = torch::zeros({1, 5});
  auto logp = torch::log(torch::tensor({1.1f, 1.5f, 0.5f, 1.5f, 10.0f})).unsqueeze(0).requires_grad_(true);
  auto adv = torch::tensor({1.0f, 2.0f, -1.0f, -1.0f, 100.0f}).unsqueeze(0);
  auto mask = torch::tensor({1.0f, 1.0f, 1.0f, 1.0f, 0.0f}).unsqueeze(0);
  auto out = policy_loss(logp, old_logp, adv, mask, 0.2);
  EXPECT_NEAR(out.loss.item<double>(), -0.3, 1e-6);
  EXPECT_NEAR(out.clip_fraction, 0.5, 1e-12);
  EXPECT_NEAR(out.approx_kl, (0.0046898018 + 0.0945348919 + 0.1931471806 + 0.0945348919) / 4, 1e-6);
  // The gradient flows only through unclipped tokens: d/dlogp of -A * ratio / 4 = -A * ratio / 4.
  out.loss.backward();
  expect_row(logp.grad(), 0, {-1.1 / 4, 0.0, 0.0, 1.5 / 4, 0.0});
}

// values [1, 2], old [0.5, 0.5], returns [1.2, 0], c = 0.2: v_clip = [0.7, 0.7];
// (v - R)^2 = [0.04, 4], (v_clip - R)^2 = [0.25, 0.49]; max = [0.25, 4] -> 0.5 * 2.125 = 1.0625, clipped 1/2.
// Without clipping: 0.5 * (0.04 + 4) / 2 = 1.01.
TEST(PpoMath, ClippedValueLoss) {
  auto v = t2({{1.0f, 2.0f}}), old = t2({{0.5f, 0.5f}}), ret = t2({{1.2f, 0.0f}}), mask = t2({{1, 1}});
  auto clipped = value_loss(v, old, ret, mask, 0.2);
  EXPECT_NEAR(clipped.loss.item<double>(), 1.0625, 1e-6);
  EXPECT_NEAR(clipped.clip_fraction, 0.5, 1e-12);
  EXPECT_NEAR(value_loss(v, old, ret, mask, 0.0).loss.item<double>(), 1.01, 1e-6);
}

// Uniform over 8: ln 8. p = [0.25, 0.75] (logits [0, ln 3]): -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.5623351446.
TEST(PpoMath, EntropyFromLogits) {
  auto e = entropy_from_logits(torch::zeros({1, 1, 8}));
  EXPECT_NEAR(e.item<double>(), std::log(8.0), 1e-6);
  auto two = entropy_from_logits(torch::tensor({0.0f, float(std::log(3.0))}).view({1, 1, 2}));
  EXPECT_NEAR(two.item<double>(), 0.5623351446, 1e-6);
}

// values [1, 2, 3], returns [1, 2, 4]: var(returns) = 14/9, var(residual [0, 0, 1]) = 2/9 -> 1 - 1/7.
TEST(PpoMath, ExplainedVariance) {
  EXPECT_NEAR(explained_variance(t2({{1, 2, 3, 50}}), t2({{1, 2, 4, -50}}), t2({{1, 1, 1, 0}})), 6.0 / 7.0, 1e-9);
  EXPECT_EQ(explained_variance(t2({{1, 2}}), t2({{3, 3}}), t2({{1, 1}})), 0.0);  // constant returns
}

// coef 0.1, target 6, horizon 10000. KL 9: err = clamp(0.5) = 0.2 -> 0.1 * (1 + 0.2 * 100 / 10000) = 0.1002.
// KL 5.4: err = -0.1 -> 0.1002 * (1 - 0.1 * 1000 / 10000) = 0.099198. target 0: fixed.
TEST(PpoMath, AdaptiveKlController) {
  AdaptiveKLController c(0.1, 6.0, 10000);
  c.update(9.0, 100);
  EXPECT_NEAR(c.coef(), 0.1002, 1e-12);
  c.update(5.4, 1000);
  EXPECT_NEAR(c.coef(), 0.099198, 1e-12);
  c.update(-100.0, 10000);  // err clamped at -0.2
  EXPECT_NEAR(c.coef(), 0.099198 * 0.8, 1e-12);
  AdaptiveKLController fixed(0.05, 0.0, 10000);
  fixed.update(100.0, 1000000);
  EXPECT_EQ(fixed.coef(), 0.05);
  EXPECT_THROW(AdaptiveKLController(-1.0, 0.0, 1.0), Error);
  EXPECT_THROW(AdaptiveKLController(0.1, 6.0, 0.0), Error);
}

// Valid [1, 2, 3, 4]: mean 2.5, unbiased var 5/3 -> (x - 2.5) / sqrt(5/3); padding 0.
TEST(PpoMath, WhitenOnOneProcess) {
  auto x = t2({{1, 2, 3}, {4, 100, -100}}), mask = t2({{1, 1, 1}, {1, 0, 0}});
  auto w = whiten(x, mask, nullptr);
  const double s = std::sqrt(5.0 / 3.0 + 1e-8);
  expect_row(w, 0, {-1.5 / s, -0.5 / s, 0.5 / s});
  expect_row(w, 1, {1.5 / s, 0.0, 0.0});
  auto kept = whiten(x, mask, nullptr, /*shift_mean=*/false);
  expect_row(kept, 0, {-1.5 / s + 2.5, -0.5 / s + 2.5, 0.5 / s + 2.5});
  EXPECT_NEAR(masked_mean(x, mask).item<double>(), 2.5, 1e-6);
}

}  // namespace
}  // namespace reglage::rl
