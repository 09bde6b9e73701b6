// The GRPO objective (clipped surrogate + beta x k3, per-response token mean, then the mean over responses)
// and binary-reward group advantages, against values worked out by hand (in the comments).
#include <gtest/gtest.h>

#include <cmath>

#include "framework/rl/grpo_math.h"
#include "framework/rl/preference_math.h"

namespace reglage {
namespace {

torch::Tensor t2(std::vector<double> v, int64_t rows) {
  return torch::tensor(v, torch::kFloat64).view({rows, -1});
}

// Two responses, R = 2. Response 0 (A = +1) has 2 tokens, response 1 (A = -2) has 1 token and a padded
// position with wild log-probs that must not count (nor produce NaN). clip_range 0.2.
//   (0,0): ratio 1, ref - logp = 0: surrogate -1 (both branches), k3 0
//   (0,1): ratio 1.5 -> clipped 1.2: max(-1.5, -1.2) = -1.2 (clipped); ref - logp = -1: k3 = e^-1 = 0.367879
//   (1,0): ratio 0.5 -> clipped 0.8: max(2 * 0.5, 2 * 0.8) = 1.6 (clipped); ref - logp = +1: k3 = e - 2 = 0.718282
struct Batch {
  torch::Tensor logp = t2({-1.0, -1.0 + std::log(1.5), -2.0 + std::log(0.5), -1000.0}, 2).requires_grad_();
  torch::Tensor old_logp = t2({-1.0, -1.0, -2.0, 0.0}, 2);
  torch::Tensor ref_logp = t2({-1.0, -2.0 + std::log(1.5), -1.0 + std::log(0.5), 0.0}, 2);
  torch::Tensor advantages = torch::tensor({1.0, -2.0}, torch::kFloat64);
  torch::Tensor mask = t2({1, 1, 1, 0}, 2);
};

TEST(GrpoMath, LossIsPerResponseTokenMeanThenMeanOverResponses) {
  Batch b;
  auto r = rl::grpo_loss(b.logp, b.old_logp, b.ref_logp, b.advantages, b.mask, 0.2, 0.1);
  // per_sample_0 = ((-1 + 0.1 * 0) + (-1.2 + 0.1 * 0.367879)) / 2 = -1.0816060
  // per_sample_1 = 1.6 + 0.1 * 0.718282 = 1.6718282          loss = (-1.0816060 + 1.6718282) / 2 = 0.2951111
  const double k3a = std::exp(-1.0), k3b = std::exp(1.0) - 2.0;
  ASSERT_EQ(r.per_sample.sizes(), torch::IntArrayRef({2}));
  EXPECT_NEAR(r.per_sample[0].item<double>(), (-2.2 + 0.1 * k3a) / 2, 1e-12);
  EXPECT_NEAR(r.per_sample[1].item<double>(), 1.6 + 0.1 * k3b, 1e-12);
  EXPECT_NEAR(r.loss.item<double>(), 0.2951111, 1e-7);
  // policy_loss = (-2.2 / 2 + 1.6) / 2 = 0.25; kl = (0.367879 / 2 + 0.718282) / 2 = 0.4511108
  EXPECT_NEAR(r.policy_loss, 0.25, 1e-12);
  EXPECT_NEAR(r.kl, (k3a / 2 + k3b) / 2, 1e-12);
  EXPECT_NEAR(r.kl, 0.4511108, 1e-7);
  EXPECT_NEAR(r.clip_fraction, 2.0 / 3.0, 1e-12);  // (0,1) and (1,0) of 3 valid tokens
  r.loss.backward();
  auto g = b.logp.grad();
  // (0,0): d(-A ratio)/dlogp = -1, k3' = 1 - e^0 = 0; / 2 tokens / 2 responses = -0.25
  // (0,1): clipped (no surrogate gradient); k3' = 1 - e^-1 = 0.632121; x 0.1 / 2 / 2 = 0.0158030
  // (1,0): clipped; k3' = 1 - e = -1.718282; x 0.1 / 1 / 2 = -0.0859141;   padding: 0
  EXPECT_NEAR(g[0][0].item<double>(), -0.25, 1e-12);
  EXPECT_NEAR(g[0][1].item<double>(), 0.1 * (1 - k3a) / 4, 1e-12);
  EXPECT_NEAR(g[1][0].item<double>(), 0.1 * (1 - std::exp(1.0)) / 2, 1e-12);
  EXPECT_EQ(g[1][1].item<double>(), 0.0);
  EXPECT_TRUE(torch::isfinite(g).all().item<bool>());
}

TEST(GrpoMath, BetaZeroIsTheClippedObjectiveAlone) {
  Batch b;
  auto r = rl::grpo_loss(b.logp, b.old_logp, b.ref_logp, b.advantages, b.mask, 0.2, 0.0);
  // (-1.1 + 1.6) / 2 = 0.25; the KL is still measured.
  EXPECT_NEAR(r.loss.item<double>(), 0.25, 1e-12);
  EXPECT_NEAR(r.kl, 0.4511108, 1e-7);
  r.loss.backward();
  EXPECT_NEAR(b.logp.grad()[0][0].item<double>(), -0.25, 1e-12);
  EXPECT_EQ(b.logp.grad()[0][1].item<double>(), 0.0);  // clipped, and no KL term
  EXPECT_EQ(b.logp.grad()[1][0].item<double>(), 0.0);
}

TEST(GrpoMath, BinaryRewardGroupAdvantages) {
  // Group of 4 with one success: mean 0.25; unbiased var = (0.75^2 + 3 x 0.25^2) / 3 = 0.75 / 3 = 0.25,
  // std 0.5 -> (1.5, -0.5, -0.5, -0.5) / (1 + 2 eps). Second group all failures -> 0.
  const double eps = 1e-4;
  auto a = rl::group_advantages(torch::tensor({1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}, torch::kFloat64), 4, eps);
  const double expect[] = {1.5, -0.5, -0.5, -0.5, 0, 0, 0, 0};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(a[i].item<double>(), expect[i] * 0.5 / (0.5 + eps), 1e-12) << i;
}

}  // namespace
}  // namespace reglage
