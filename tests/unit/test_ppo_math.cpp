// framework/rl/ppo_math against values worked out by hand (the arithmetic is in the comment above each
// test): GAE, KL estimators, shaped token rewards, the clipped policy and value losses, entropy,
// explained variance, the adaptive KL coefficient and whitening on one process.
// Whitening across ranks: tests/mpi/test_ppo_whiten.cpp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "framework/core/error.h"
#include "framework/rl/ppo_math.h"

namespace reglage::rl {
namespace {

// Rows of equal length -> (B, T) float32.
torch::Tensor rows(const std::vector<std::vector<float>>& r) {
  std::vector<torch::Tensor> out;
  for (const auto& row : r) out.push_back(torch::tensor(row, torch::kFloat32));
  return torch::stack(out);
}

// One token: (1, 1) float64.
torch::Tensor one(double v) { return torch::full({1, 1}, v, torch::kFloat64); }

void expect_row(const torch::Tensor& t, int64_t row, const std::vector<double>& expected, double tol = 1e-6) {
  ASSERT_EQ(t.size(1), int64_t(expected.size()));
  for (size_t i = 0; i < expected.size(); ++i)
    EXPECT_NEAR(t[row][int64_t(i)].item<double>(), expected[i], tol) << "row " << row << " col " << i;
}

// ---- masked_mean / masked_sum ---------------------------------------------------------------------------

// x = [[1, 2, 3], [4, 50, 60]], mask = [[1, 1, 1], [1, 0, 0]]: sum 10 over 4 tokens -> mean 2.5.
// An all-padding mask: sum 0 / max(0, 1) = 0.
TEST(PpoMaskedMean, IgnoresPaddingAndEmptyMask) {
  auto x = rows({{1, 2, 3}, {4, 50, 60}}), mask = rows({{1, 1, 1}, {1, 0, 0}});
  EXPECT_DOUBLE_EQ(masked_sum(x, mask).item<double>(), 10.0);
  EXPECT_DOUBLE_EQ(masked_mean(x, mask).item<double>(), 2.5);
  EXPECT_DOUBLE_EQ(masked_mean(x, torch::zeros_like(mask)).item<double>(), 0.0);
}

// ---- GAE --------------------------------------------------------------------------------------------------

// gamma 0.9, lam 0.8 (gamma * lam = 0.72), r = [0.5, -1, 2], V = [1, 0.5, -0.5], all 3 tokens valid:
//   t=2 (last; V after it is 0): delta = 2 + 0 - (-0.5)        = 2.5     A2 = 2.5
//   t=1: delta = -1 + 0.9 * (-0.5) - 0.5 = -1 - 0.45 - 0.5    = -1.95   A1 = -1.95 + 0.72 * 2.5    = -0.15
//   t=0: delta = 0.5 + 0.9 * 0.5 - 1     = 0.5 + 0.45 - 1     = -0.05   A0 = -0.05 + 0.72 * -0.15  = -0.158
//   returns = A + V = [-0.158 + 1, -0.15 + 0.5, 2.5 - 0.5] = [0.842, 0.35, 2.0]
TEST(PpoGae, SingleRowByHand) {
  auto out = gae(rows({{0.5f, -1.0f, 2.0f}}), rows({{1.0f, 0.5f, -0.5f}}), rows({{1, 1, 1}}), 0.9, 0.8);
  expect_row(out.advantages, 0, {-0.158, -0.15, 2.5});
  expect_row(out.returns, 0, {0.842, 0.35, 2.0});
  // lam = 0 is one-step TD: A_t = delta_t = [-0.05, -1.95, 2.5].
  auto td = gae(rows({{0.5f, -1.0f, 2.0f}}), rows({{1.0f, 0.5f, -0.5f}}), rows({{1, 1, 1}}), 0.9, 0.0);
  expect_row(td.advantages, 0, {-0.05, -1.95, 2.5});
}

// Same gamma/lam. Row 0 as above (3 valid). Row 1 has 2 valid tokens and junk on its padding
// (r = 99, V = 50) that must not leak into t=1:
//   t=1 (last valid: the episode ends, V_2 * m_2 = 0): delta = 3 + 0.9 * 50 * 0 - 1 = 2     A1 = 2
//   t=0: delta = 1 + 0.9 * 1 - 2 = -0.1                                      A0 = -0.1 + 0.72 * 2 = 1.34
//   returns = [1.34 + 2, 2 + 1, 0] = [3.34, 3, 0]; advantages [1.34, 2, 0].
// Row 2 has no valid token: all zeros.
TEST(PpoGae, PaddedRowsOfDifferentLengths) {
  auto r = rows({{0.5f, -1.0f, 2.0f}, {1.0f, 3.0f, 99.0f}, {5.0f, 5.0f, 5.0f}});
  auto v = rows({{1.0f, 0.5f, -0.5f}, {2.0f, 1.0f, 50.0f}, {1.0f, 1.0f, 1.0f}});
  auto m = rows({{1, 1, 1}, {1, 1, 0}, {0, 0, 0}});
  auto out = gae(r, v, m, 0.9, 0.8);
  expect_row(out.advantages, 0, {-0.158, -0.15, 2.5});
  expect_row(out.returns, 0, {0.842, 0.35, 2.0});
  expect_row(out.advantages, 1, {1.34, 2.0, 0.0});
  expect_row(out.returns, 1, {3.34, 3.0, 0.0});
  EXPECT_EQ(out.advantages[1][2].item<float>(), 0.0f);  // padding exactly 0
  EXPECT_EQ(out.advantages[2].abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(out.returns[2].abs().sum().item<float>(), 0.0f);
}

// No graph comes out even when the inputs carry one; the dtype follows rewards.
TEST(PpoGae, NoGradientAndDtypeOfRewards) {
  auto r = rows({{0.5f, -1.0f, 2.0f}}).to(torch::kFloat64).requires_grad_(true);
  auto v = rows({{1.0f, 0.5f, -0.5f}}).requires_grad_(true);
  auto out = gae(r, v, rows({{1, 1, 1}}), 0.9, 0.8);
  EXPECT_FALSE(out.advantages.requires_grad());
  EXPECT_FALSE(out.returns.requires_grad());
  EXPECT_EQ(out.advantages.scalar_type(), torch::kFloat64);
  EXPECT_NEAR(out.advantages[0][0].item<double>(), -0.158, 1e-12);
}

// ---- KL estimators ----------------------------------------------------------------------------------------

// logp = [-0.5, -2, -1], ref = [-1, -1, -1]:
//   k1 = logp - ref = [0.5, -1, 0]
//   k3 with d = ref - logp = [-0.5, 1, 0]: exp(d) - 1 - d = [0.6065306597 - 0.5, 2.7182818285 - 2, 0]
//                                                          = [0.1065306597, 0.7182818285, 0]
TEST(PpoKl, EstimatorsByHand) {
  auto logp = rows({{-0.5f, -2.0f, -1.0f}}), ref = rows({{-1.0f, -1.0f, -1.0f}});
  expect_row(kl_estimate(logp, ref, config::KlEstimator::kK1), 0, {0.5, -1.0, 0.0});
  expect_row(kl_estimate(logp, ref, config::KlEstimator::kK3), 0, {0.1065306597, 0.7182818285, 0.0});
}

// exp(d) >= 1 + d for every d, so k3 is never negative (k1 is, on half of these tokens).
TEST(PpoKl, K3IsNonNegative) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto a = torch::randn({32, 24}, gen) * 2, b = torch::randn({32, 24}, gen) * 2;
  EXPECT_GE(kl_estimate(a, b, config::KlEstimator::kK3).min().item<double>(), 0.0);
  EXPECT_LT(kl_estimate(a, b, config::KlEstimator::kK1).min().item<double>(), 0.0);
  EXPECT_EQ(kl_estimate(a, a, config::KlEstimator::kK3).abs().max().item<double>(), 0.0);
  // Tiny log-ratios of both signs in float32, where exp(d) - 1 - d would round below 0.
  auto d = torch::linspace(-1e-3, 1e-3, 2001, torch::kFloat32).view({1, -1});  // (1, 2001)
  auto ref = torch::full_like(d, -2.0f);
  EXPECT_GE(kl_estimate(ref - d, ref, config::KlEstimator::kK3).min().item<double>(), 0.0);
}

// ---- token rewards ----------------------------------------------------------------------------------------

// kl_coef 0.1, scores [1.5, -2, 7]:
//   row 0, 3 valid, kl [0.2, -0.4, 0.6]: -0.1 * kl = [-0.02, 0.04, -0.06], + 1.5 at t=2 -> [-0.02, 0.04, 1.44]
//   row 1, 2 valid, kl [0.1, 0.3, 5]:    [-0.01, -0.03 - 2, 0] = [-0.01, -2.03, 0] (padding kl ignored)
//   row 2, no valid token: [0, 0, 0] (its score 7 goes nowhere)
TEST(PpoTokenRewards, KlPenaltyEverywhereScoreOnLastValidToken) {
  auto kl = rows({{0.2f, -0.4f, 0.6f}, {0.1f, 0.3f, 5.0f}, {1.0f, 1.0f, 1.0f}});
  auto mask = rows({{1, 1, 1}, {1, 1, 0}, {0, 0, 0}});
  auto r = token_rewards(torch::tensor({1.5f, -2.0f, 7.0f}), kl, mask, 0.1);
  ASSERT_EQ(r.sizes(), kl.sizes());
  expect_row(r, 0, {-0.02, 0.04, 1.44});
  expect_row(r, 1, {-0.01, -2.03, 0.0});
  expect_row(r, 2, {0.0, 0.0, 0.0});
  EXPECT_EQ(r[1][2].item<float>(), 0.0f);
}

// ---- clipped policy loss ----------------------------------------------------------------------------------

// c = 0.2, one token each; loss = max(-A * ratio, -A * clamp(ratio, 0.8, 1.2)).
// Inside: ratio 1.1, A = 2: max(-2.2, -2.2) = -2.2, not clipped; d loss / d logp = -A * ratio = -2.2;
//   approx_kl = (1.1 - 1) - ln 1.1 = 0.1 - 0.0953101798 = 0.0046898202.
TEST(PpoPolicyLoss, RatioInsideRangeIsNotClipped) {
  auto logp = one(std::log(1.1)).requires_grad_(true);
  auto out = policy_loss(logp, one(0.0), one(2.0), one(1.0), 0.2);
  EXPECT_NEAR(out.loss.item<double>(), -2.2, 1e-6);
  EXPECT_EQ(out.clip_fraction, 0.0);
  EXPECT_NEAR(out.approx_kl, 0.0046898202, 1e-7);
  out.loss.backward();
  EXPECT_NEAR(logp.grad().item<double>(), -2.2, 1e-6);
}

// Above: ratio 1.5, A = 1: max(-1.5, -1 * 1.2) = -1.2, clipped (fraction 1), no gradient;
//   approx_kl = 0.5 - ln 1.5 = 0.0945348919.
TEST(PpoPolicyLoss, RatioAboveRangeWithPositiveAdvantageIsClipped) {
  auto logp = one(std::log(1.5)).requires_grad_(true);
  auto out = policy_loss(logp, one(0.0), one(1.0), one(1.0), 0.2);
  EXPECT_NEAR(out.loss.item<double>(), -1.2, 1e-6);
  EXPECT_EQ(out.clip_fraction, 1.0);
  EXPECT_NEAR(out.approx_kl, 0.0945348919, 1e-7);
  out.loss.backward();
  EXPECT_EQ(logp.grad().item<double>(), 0.0);
}

// Below: ratio 0.5, A = -1: max(0.5, 0.8) = 0.8, clipped (fraction 1), no gradient;
//   approx_kl = -0.5 - ln 0.5 = 0.1931471806.
TEST(PpoPolicyLoss, RatioBelowRangeWithNegativeAdvantageIsClipped) {
  auto logp = one(std::log(0.5)).requires_grad_(true);
  auto out = policy_loss(logp, one(0.0), one(-1.0), one(1.0), 0.2);
  EXPECT_NEAR(out.loss.item<double>(), 0.8, 1e-6);
  EXPECT_EQ(out.clip_fraction, 1.0);
  EXPECT_NEAR(out.approx_kl, 0.1931471806, 1e-7);
  out.loss.backward();
  EXPECT_EQ(logp.grad().item<double>(), 0.0);
}

// The three regions together with two tokens outside the range where the clip does not bind
// (the pessimistic min keeps the unclipped term) and a padding token with huge values:
//   (1.1,  2) -> -2.2  (1.5, 1) -> -1.2 clipped  (0.5, -1) -> 0.8 clipped
//   (1.5, -1) -> max(1.5, 1.2) = 1.5   (0.5, 1) -> max(-0.5, -0.8) = -0.5   (10, 100) padding
// loss = (-2.2 - 1.2 + 0.8 + 1.5 - 0.5) / 5 = -1.6 / 5 = -0.32; clip_fraction = 2 / 5 = 0.4;
// d loss / d logp = -A * ratio / 5 on unclipped tokens: [-0.44, 0, 0, 0.3, -0.1, 0];
// approx_kl = (0.0046898202 + 0.0945348919 + 0.1931471806 + 0.0945348919 + 0.1931471806) / 5 = 0.1160107930.
TEST(PpoPolicyLoss, MixedBatchWithPadding) {
  auto ratio = torch::tensor({1.1, 1.5, 0.5, 1.5, 0.5, 10.0}, torch::kFloat64).unsqueeze(0);  // (1, 6)
  auto logp = ratio.log().requires_grad_(true);
  auto adv = torch::tensor({2.0, 1.0, -1.0, -1.0, 1.0, 100.0}, torch::kFloat64).unsqueeze(0);
  auto mask = torch::tensor({1.0, 1.0, 1.0, 1.0, 1.0, 0.0}, torch::kFloat64).unsqueeze(0);
  auto out = policy_loss(logp, torch::zeros_like(ratio), adv, mask, 0.2);
  EXPECT_NEAR(out.loss.item<double>(), -0.32, 1e-12);
  EXPECT_NEAR(out.clip_fraction, 0.4, 1e-15);
  EXPECT_NEAR(out.approx_kl, 0.1160107930, 1e-9);
  out.loss.backward();
  expect_row(logp.grad(), 0, {-0.44, 0.0, 0.0, 0.3, -0.1, 0.0}, 1e-12);
}

// ---- value loss -------------------------------------------------------------------------------------------

// c = 0.5; v_clip = old + clamp(v - old, -0.5, 0.5); per token max((v - R)^2, (v_clip - R)^2):
//   v 2,  old 1,    R 3:   (-1)^2 = 1,   v_clip 1.5  -> 2.25   max 2.25 (clipped)
//   v 0,  old 1,    R 0:   0,            v_clip 0.5  -> 0.25   max 0.25 (clipped)
//   v 1,  old 0.75, R 0:   1,            v_clip 1    -> 1      max 1    (equal: not counted)
//   v -1, old 0,    R 0.5: 2.25,         v_clip -0.5 -> 1      max 2.25 (unclipped is larger)
//   padding v 5, old 0, R -9: ignored
// loss = 0.5 * (2.25 + 0.25 + 1 + 2.25) / 4 = 0.71875, clip_fraction 2 / 4;
// d loss / dv = 0.5 / 4 * 2 (v - R) = (v - R) / 4 on tokens where the unclipped term is used:
//   [0, 0, 0.25, -0.375, 0]. Without clipping: 0.5 * (1 + 0 + 1 + 2.25) / 4 = 0.53125.
TEST(PpoValueLoss, ClippedAndUnclipped) {
  auto v = rows({{2.0f, 0.0f, 1.0f, -1.0f, 5.0f}}).requires_grad_(true);
  auto old = rows({{1.0f, 1.0f, 0.75f, 0.0f, 0.0f}}), ret = rows({{3.0f, 0.0f, 0.0f, 0.5f, -9.0f}});
  auto mask = rows({{1, 1, 1, 1, 0}});
  auto clipped = value_loss(v, old, ret, mask, 0.5);
  EXPECT_NEAR(clipped.loss.item<double>(), 0.71875, 1e-7);
  EXPECT_EQ(clipped.clip_fraction, 0.5);
  clipped.loss.backward();
  expect_row(v.grad(), 0, {0.0, 0.0, 0.25, -0.375, 0.0}, 1e-7);
  auto plain = value_loss(v, old, ret, mask, 0.0);
  EXPECT_NEAR(plain.loss.item<double>(), 0.53125, 1e-7);
  EXPECT_EQ(plain.clip_fraction, 0.0);
}

// ---- entropy ----------------------------------------------------------------------------------------------

// Uniform over V = 7: ln 7. Logits [0, ln 3] -> p = [0.25, 0.75]:
//   -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.3465735903 + 0.2157615543 = 0.5623351446.
// Large shifted logits give the same (log_softmax, not exp of raw logits).
TEST(PpoEntropy, UniformIsLogVAndTwoPointByHand) {
  auto e = entropy_from_logits(torch::zeros({2, 3, 7}));  // (B, T, V) -> (B, T)
  ASSERT_EQ(e.dim(), 2);
  EXPECT_EQ(e.size(0), 2);
  EXPECT_EQ(e.size(1), 3);
  EXPECT_NEAR(e.max().item<double>(), std::log(7.0), 1e-6);
  EXPECT_NEAR(e.min().item<double>(), std::log(7.0), 1e-6);
  auto two = entropy_from_logits(torch::tensor({0.0, std::log(3.0)}, torch::kFloat64).view({1, 1, 2}));
  EXPECT_EQ(two.scalar_type(), torch::kFloat64);
  EXPECT_NEAR(two.item<double>(), 0.5623351446, 1e-10);
  auto big = entropy_from_logits(torch::tensor({1000.0f, 1000.0f + float(std::log(3.0))}).view({1, 1, 2}));
  EXPECT_NEAR(big.item<double>(), 0.5623351446, 1e-4);
}

// A -inf logit (a masked-out token) contributes 0: entropy of [0, ln 3, -inf] = 0.5623351446, and the
// gradient stays finite.
TEST(PpoEntropy, MinusInfinityLogitAddsNothing) {
  const double inf = std::numeric_limits<double>::infinity();
  auto logits = torch::tensor({0.0, std::log(3.0), -inf}, torch::kFloat64).view({1, 1, 3}).requires_grad_(true);
  auto e = entropy_from_logits(logits);
  EXPECT_NEAR(e.item<double>(), 0.5623351446, 1e-10);
  e.sum().backward();
  EXPECT_TRUE(torch::isfinite(logits.grad()).all().item<bool>()) << logits.grad();
  // dH/dz_i = -p_i (log p_i + H): for p_0 = 0.25: -0.25 * (ln 0.25 + 0.5623351446) = 0.2059898041.
  EXPECT_NEAR(logits.grad()[0][0][0].item<double>(), 0.2059898041, 1e-9);
  EXPECT_EQ(logits.grad()[0][0][2].item<double>(), 0.0);
}

// ---- explained variance -----------------------------------------------------------------------------------

// values [1, 2, 3], returns [2, 2, 5] (4th token padding, junk):
//   residual R - V = [1, 0, 2]: mean 1, population var (0 + 1 + 1) / 3 = 2/3
//   returns: mean 3, deviations [-1, -1, 2], var (1 + 1 + 4) / 3 = 2      -> 1 - (2/3) / 2 = 2/3
// Perfect values -> 1; constant returns -> 0 (documented instead of NaN).
TEST(PpoExplainedVariance, ByHand) {
  auto mask = rows({{1, 1, 1, 0}});
  EXPECT_NEAR(explained_variance(rows({{1, 2, 3, 40}}), rows({{2, 2, 5, -40}}), mask), 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(explained_variance(rows({{2, 2, 5, 0}}), rows({{2, 2, 5, 9}}), mask), 1.0, 1e-12);
  EXPECT_EQ(explained_variance(rows({{1, 2, 3, 0}}), rows({{4, 4, 4, 9}}), mask), 0.0);
}

// ---- adaptive KL coefficient ------------------------------------------------------------------------------

// init 0.2, target 4, horizon 1000:
//   kl 5,   n 100: err = 5/4 - 1 = 0.25 -> clamped 0.2;   coef = 0.2 * (1 + 0.2 * 0.1)      = 0.204
//   kl 3,   n 50:  err = -0.25 -> clamped -0.2;           coef = 0.204 * (1 - 0.2 * 0.05)   = 0.20196
//   kl 4.4, n 200: err = 0.1 (inside the clamp);          coef = 0.20196 * (1 + 0.1 * 0.2)  = 0.2059992
TEST(PpoAdaptiveKl, UpdateByHandWithClamp) {
  AdaptiveKLController c(0.2, 4.0, 1000.0);
  EXPECT_EQ(c.coef(), 0.2);
  c.update(5.0, 100);
  EXPECT_NEAR(c.coef(), 0.204, 1e-15);
  c.update(3.0, 50);
  EXPECT_NEAR(c.coef(), 0.20196, 1e-15);
  c.update(4.4, 200);
  EXPECT_NEAR(c.coef(), 0.2059992, 1e-15);
  c.set_coef(0.5);
  EXPECT_EQ(c.coef(), 0.5);
}

TEST(PpoAdaptiveKl, TargetZeroIsFixedAndConstructorValidates) {
  AdaptiveKLController fixed(0.05, 0.0, 1000.0);
  fixed.update(100.0, 100000);
  EXPECT_EQ(fixed.coef(), 0.05);
  EXPECT_NO_THROW(AdaptiveKLController(0.05, 0.0, 0.0));  // horizon unused when fixed
  EXPECT_THROW(AdaptiveKLController(-0.1, 0.0, 1000.0), Error);
  EXPECT_THROW(AdaptiveKLController(0.1, 4.0, 0.0), Error);
  EXPECT_THROW(AdaptiveKLController(0.1, 4.0, -5.0), Error);
}

// ---- whitening on one process -----------------------------------------------------------------------------

// Valid tokens [1, 3, 5, 7]: mean 4, deviations [-3, -1, 1, 3], sum of squares 20, unbiased var 20/3,
// s = sqrt(20/3 + 1e-8); whitened [-3, -1, 1, 3] / s; padding 0. shift_mean false adds 4 back.
TEST(PpoWhiten, OneRankByHand) {
  auto x = rows({{1, 3, 5}, {7, 100, -100}}), mask = rows({{1, 1, 1}, {1, 0, 0}});
  const double s = std::sqrt(20.0 / 3.0 + 1e-8);
  auto w = whiten(x, mask, nullptr);
  expect_row(w, 0, {-3 / s, -1 / s, 1 / s});
  expect_row(w, 1, {3 / s, 0.0, 0.0});
  EXPECT_EQ(w[1][1].item<float>(), 0.0f);
  EXPECT_EQ(w[1][2].item<float>(), 0.0f);
  auto kept = whiten(x, mask, nullptr, /*shift_mean=*/false);
  expect_row(kept, 0, {4 - 3 / s, 4 - 1 / s, 4 + 1 / s});
  expect_row(kept, 1, {4 + 3 / s, 0.0, 0.0});
}

// A random padded batch: over the valid tokens mean 0 and unbiased variance 1; padding exactly 0.
TEST(PpoWhiten, OneRankMeanZeroUnbiasedVarianceOne) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
  auto x = torch::randn({6, 9}, gen) * 5 + 3;  // (B, T)
  auto mask = torch::zeros({6, 9});
  for (int64_t b = 0; b < 6; ++b) mask[b].narrow(0, 0, 1 + (b * 4) % 9).fill_(1.0f);
  auto w = whiten(x, mask, nullptr).to(torch::kFloat64);
  auto m = mask.to(torch::kFloat64);
  const double n = m.sum().item<double>();
  const double mean = (w * m).sum().item<double>() / n;
  const double var = ((w - mean).pow(2) * m).sum().item<double>() / (n - 1);
  EXPECT_NEAR(mean, 0.0, 1e-6);
  EXPECT_NEAR(var, 1.0, 1e-5);
  EXPECT_EQ((w * (1 - m)).abs().sum().item<double>(), 0.0);
}

}  // namespace
}  // namespace reglage::rl
