// chunked_token_logprobs against log_softmax over the full logits: values and gradients (to the hidden states
// and to a trainable head), for several chunk sizes and a temperature; CausalLM::token_logprobs against the
// full forward's logits on stories260K.
#include <gtest/gtest.h>

#include "framework/io/model_io.h"
#include "framework/kernels/frozen_linear.h"
#include "framework/kernels/fused_elementwise.h"
#include "framework/model/chunked_logprob.h"
#include "test_util.h"

namespace reglage::model {
namespace {

struct Reference {
  torch::Tensor logp, grad_h, grad_w;
};

// The plain path: full logits, log_softmax, gather; gradients of sum(logp * weights).
Reference full_path(const torch::Tensor& h0, const torch::Tensor& w0, const torch::Tensor& targets, double t,
                    const torch::Tensor& weights) {
  auto h = h0.detach().clone().requires_grad_(true), w = w0.detach().clone().requires_grad_(true);
  auto logp = torch::log_softmax(torch::nn::functional::linear(h, w) / t, -1).gather(1, targets.unsqueeze(1)).squeeze(1);
  (logp * weights).sum().backward();
  return {logp.detach(), h.grad(), w.grad()};
}

// Random operands: hidden states (N, D), a head (V, D), targets and an arbitrary upstream gradient (N).
struct Operands {
  torch::Tensor h, w, targets, weights;
};
Operands random_operands(torch::ScalarType dtype, int64_t N, int64_t D, int64_t V) {
  return {torch::randn({N, D}, dtype), torch::randn({V, D}, dtype), torch::randint(0, V, {N}, torch::kLong),
          torch::randn({N}, dtype)};
}

TEST(ChunkedLogprob, EqualsTheFullLogSoftmaxInValueAndGradient) {
  torch::manual_seed(3);
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    const double tol = dtype == torch::kFloat64 ? 1e-12 : 2e-5;
    const auto [h0, w0, targets, weights] = random_operands(dtype, 11, 8, 37);
    for (double t : {1.0, 0.7}) {
      const Reference ref = full_path(h0, w0, targets, t, weights);
      for (int64_t chunk : {1, 3, 11, 100}) {
        auto h = h0.detach().clone().requires_grad_(true), w = w0.detach().clone().requires_grad_(true);
        auto logp = chunked_token_logprobs(h, w, targets, t, chunk);
        (logp * weights).sum().backward();
        EXPECT_LT((logp - ref.logp).abs().max().item<double>(), tol) << "chunk " << chunk << " t " << t;
        EXPECT_LT((h.grad() - ref.grad_h).abs().max().item<double>(), tol) << "chunk " << chunk << " t " << t;
        EXPECT_LT((w.grad() - ref.grad_w).abs().max().item<double>(), tol) << "chunk " << chunk << " t " << t;
      }
    }
  }
  // A frozen head gets no gradient and costs none.
  auto h = torch::randn({4, 8}).requires_grad_(true);
  auto w = torch::randn({37, 8});
  chunked_token_logprobs(h, w, torch::randint(0, 37, {4}, torch::kLong)).sum().backward();
  EXPECT_TRUE(h.grad().defined());
  EXPECT_FALSE(w.grad().defined());
}

// A frozen head (what LoRA training has): forward forms d logp / d h and backward scales it; the gradient to
// h equals the full path's for any upstream gradient, chunk size and temperature, and a second backward
// through the same forward (retain_graph) gives the same again.
TEST(ChunkedLogprob, AFrozenHeadGivesTheFullPathsGradientToTheHiddenStates) {
  torch::manual_seed(6);
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    const double tol = dtype == torch::kFloat64 ? 1e-12 : 2e-5;
    const auto [h0, w, targets, weights] = random_operands(dtype, 13, 8, 43);
    for (double t : {1.0, 0.8}) {
      const Reference ref = full_path(h0, w, targets, t, weights);
      for (int64_t chunk : {1, 5, 13, 64}) {
        auto h = h0.detach().clone().requires_grad_(true);
        auto logp = chunked_token_logprobs(h, w, targets, t, chunk);
        EXPECT_LT((logp - ref.logp).abs().max().item<double>(), tol) << "chunk " << chunk << " t " << t;
        (logp * weights).sum().backward({}, /*retain_graph=*/true);
        EXPECT_LT((h.grad() - ref.grad_h).abs().max().item<double>(), tol) << "chunk " << chunk << " t " << t;
        (logp * weights).sum().backward();
        EXPECT_LT((h.grad() - 2 * ref.grad_h).abs().max().item<double>(), 2 * tol) << "chunk " << chunk;
        EXPECT_FALSE(w.grad().defined());
      }
    }
  }
  // Without grad mode nothing is formed for backward, and the values are the same.
  auto h = torch::randn({5, 8}).requires_grad_(true);
  auto w2 = torch::randn({37, 8});
  auto targets = torch::randint(0, 37, {5}, torch::kLong);
  auto with_grad = chunked_token_logprobs(h, w2, targets);
  torch::NoGradGuard no_grad;
  EXPECT_LT((chunked_token_logprobs(h, w2, targets) - with_grad).abs().max().item<double>(), 1e-6);
}

// bfloat16 with a frozen head at t = 1 takes the fused pass (onehot_minus_softmax_rows_): the same bits as the
// logits widened to float32, neg_softmax_rows_, 1 added at the target and the result rounded back before the
// product with the head, and within bfloat16's rounding of the float64 path.
TEST(ChunkedLogprob, BFloat16FrozenHeadEqualsTheWidenedLogitsBitForBit) {
  torch::manual_seed(8);
  const int64_t N = 13, D = 16, V = 300;
  const auto [h0, w, targets, weights] = random_operands(torch::kBFloat16, N, D, V);
  for (int64_t chunk : {1, 5, 64}) {
    auto h = h0.detach().clone().requires_grad_(true);
    auto logp = chunked_token_logprobs(h, w, targets, 1.0, chunk);
    (logp * weights).sum().backward();
    torch::Tensor want_logp = torch::empty({N}), want_dh = torch::empty({N, D}, torch::kBFloat16);
    for (int64_t a = 0; a < N; a += chunk) {
      const int64_t b = std::min(N, a + chunk);
      auto t = targets.slice(0, a, b).unsqueeze(1);
      auto z = kernels::matmul_2d(h0.slice(0, a, b), w.t()).to(torch::kFloat32);
      auto picked = z.gather(1, t).squeeze(1);
      auto lse = kernels::neg_softmax_rows_(z);
      want_logp.slice(0, a, b).copy_(picked - lse);
      z.scatter_add_(1, t, torch::ones({b - a, 1}));
      want_dh.slice(0, a, b).copy_(kernels::matmul_2d(z.to(torch::kBFloat16), w));
    }
    EXPECT_TRUE(torch::equal(logp, want_logp)) << "chunk " << chunk;
    EXPECT_TRUE(torch::equal(h.grad(), want_dh * weights.unsqueeze(1))) << "chunk " << chunk;
    const Reference ref = full_path(h0.to(torch::kFloat64), w.to(torch::kFloat64), targets, 1.0,
                                    weights.to(torch::kFloat64));
    EXPECT_LT((logp.to(torch::kFloat64) - ref.logp).abs().max().item<double>(), 0.1) << "chunk " << chunk;
    EXPECT_LT((h.grad().to(torch::kFloat64) - ref.grad_h).abs().max().item<double>(), 0.1) << "chunk " << chunk;
  }
}

// Log-probs and entropies together (what PPO/GRPO updates take) against log_softmax and rl::entropy's formula
// over the full logits, in value and in the gradient of a loss that weighs both; either output alone.
TEST(ChunkedLogprob, LogprobsAndEntropyEqualTheFullPathInValueAndGradient) {
  torch::manual_seed(4);
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    const double tol = dtype == torch::kFloat64 ? 1e-12 : 2e-5;
    const int64_t N = 9, D = 8, V = 41;
    auto h0 = torch::randn({N, D}, dtype), w0 = torch::randn({V, D}, dtype);
    auto targets = torch::randint(0, V, {N}, torch::kLong);
    auto a = torch::randn({N}, dtype), c = torch::randn({N}, dtype);  // upstream gradients of logp, entropy
    for (double t : {1.0, 0.6}) {
      for (int use = 0; use < 3; ++use) {  // 0: both outputs in the loss, 1: logp only, 2: entropy only
        auto loss_of = [&](const torch::Tensor& lp, const torch::Tensor& ent) {
          return (use != 2 ? (lp * a).sum() : torch::zeros({}, dtype)) + (use != 1 ? (ent * c).sum() : torch::zeros({}, dtype));
        };
        auto hr = h0.detach().clone().requires_grad_(true), wr = w0.detach().clone().requires_grad_(true);
        auto l = torch::log_softmax(torch::nn::functional::linear(hr, wr) / t, -1);  // (N, V)
        auto ref_lp = l.gather(1, targets.unsqueeze(1)).squeeze(1);
        auto ref_ent = -(l.exp() * l).sum(-1);
        loss_of(ref_lp, ref_ent).backward();
        for (int64_t chunk : {1, 4, 100}) {
          auto h = h0.detach().clone().requires_grad_(true), w = w0.detach().clone().requires_grad_(true);
          auto [lp, ent] = chunked_logprobs_and_entropy(h, w, targets, t, chunk);
          EXPECT_LT((lp - ref_lp).abs().max().item<double>(), tol);
          EXPECT_LT((ent - ref_ent).abs().max().item<double>(), tol);
          loss_of(lp, ent).backward();
          EXPECT_LT((h.grad() - hr.grad()).abs().max().item<double>(), tol) << "chunk " << chunk << " use " << use;
          EXPECT_LT((w.grad() - wr.grad()).abs().max().item<double>(), tol) << "chunk " << chunk << " use " << use;
        }
      }
    }
  }
  // The entropy of a uniform distribution over V is log V; a frozen head gets no gradient.
  auto h = torch::zeros({2, 8}).requires_grad_(true);
  auto [lp, ent] = chunked_logprobs_and_entropy(h, torch::randn({37, 8}), torch::zeros({2}, torch::kLong));
  EXPECT_NEAR(ent[0].item<double>(), std::log(37.0), 1e-5);
  EXPECT_NEAR(lp[1].item<double>(), -std::log(37.0), 1e-5);
}

TEST(ChunkedLogprob, ChunkRowsFollowTheBudget) {
  EXPECT_EQ(logprob_chunk_rows(49152, int64_t(64) << 20), 341);
  EXPECT_EQ(logprob_chunk_rows(512, int64_t(64) << 20), 32768);
  EXPECT_EQ(logprob_chunk_rows(int64_t(1) << 40, 1), 1);
}

// The model's token_logprobs: only the positions with a target, the same numbers as the full forward.
TEST(ChunkedLogprob, ModelTokenLogprobsEqualTheFullForward) {
  auto m = io::load_model(test::model_260k(), torch::kFloat32);
  torch::manual_seed(5);
  auto ids = torch::randint(1, 512, {3, 9}, torch::kLong);
  auto targets = torch::randint(1, 512, {3, 9}, torch::kLong);
  targets.index_put_({0, torch::indexing::Slice(0, 4)}, -100);  // a prompt: no target
  targets.index_put_({2, 8}, -100);
  torch::NoGradGuard no_grad;
  auto full = torch::log_softmax(m->forward({ids, {}, {}, nullptr, {}}) / 0.9, -1)
                  .gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1);                  // (3, 9)
  full = full.masked_fill(targets.eq(-100), 0.0);
  auto got = m->token_logprobs({ids, {}, {}, nullptr, {}}, targets, 0.9);                       // (3, 9)
  EXPECT_LT((got - full).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(got.index({0, torch::indexing::Slice(0, 4)}).abs().sum().item<double>(), 0.0);
}

}  // namespace
}  // namespace reglage::model
