// The math of PPO as small pure functions on response-aligned tensors, so tests can check each against
// hand-computed values. Shapes: B responses, T response tokens (right-padded); `mask` (B, T) is 1.0 on a
// real response token and 0.0 on padding. Nothing here touches a model.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "framework/config/choices.h"
#include "framework/dist/communicator.h"

namespace reglage::rl {

// sum(x * mask): a scalar tensor (keeps the graph through x). x and mask broadcast together.
torch::Tensor masked_sum(const torch::Tensor& x, const torch::Tensor& mask);
// sum(x * mask) / max(sum(mask), 1): a scalar tensor (keeps the graph through x); 0 when no token is valid.
torch::Tensor masked_mean(const torch::Tensor& x, const torch::Tensor& mask);

// Per-token estimate of KL(pi || pi_ref) from the sampled token's log-probs (Schulman, "Approximating KL
// divergence"), (B, T):
//   k1: logp - ref_logp                                  (unbiased, can be negative per token)
//   k3: exp(ref_logp - logp) - 1 - (ref_logp - logp)     (unbiased, >= 0, lower variance; computed with
//       expm1 so it stays >= 0 after rounding)
torch::Tensor kl_estimate(const torch::Tensor& logp, const torch::Tensor& ref_logp, config::KlEstimator estimator);

// Per-token rewards (B, T), no gradient:
//   r_t = -kl_coef * kl_t * m_t  +  [t == last valid token of the row] * score
// i.e. the KL penalty at every valid token and the sequence's score (B) at its last valid token (Ziegler et
// al. 2019 / InstructGPT). Rows without a valid token get all zeros; padding is 0. Dtype of kl.
torch::Tensor token_rewards(const torch::Tensor& scores, const torch::Tensor& kl, const torch::Tensor& mask,
                            double kl_coef);

// Generalised advantage estimation, backwards over t (no gradient):
//   delta_t = r_t + gamma * V_{t+1} * m_{t+1} - V_t
//   A_t     = delta_t + gamma * lam * m_{t+1} * A_{t+1}
// The value after the last valid token is 0 (the episode ends there), so values and rewards on padding
// never leak in. returns = A + V (the value targets). Both are 0 where mask is 0. Computed in float64 on
// the CPU, returned in the dtype and on the device of rewards, without a graph.
struct GaeResult {
  torch::Tensor advantages;  // (B, T)
  torch::Tensor returns;     // (B, T)
};
GaeResult gae(const torch::Tensor& rewards, const torch::Tensor& values, const torch::Tensor& mask, double gamma,
              double lam);

// (x - mean) / sqrt(var + 1e-8) over the valid tokens of the GLOBAL batch: the count, sum and sum of
// squares are all-reduced across ranks (float64) when comm is given, so the result equals whitening the
// concatenation of every rank's batch. var is unbiased (count / (count - 1)). shift_mean false adds the
// mean back. 0 where mask is 0.
torch::Tensor whiten(const torch::Tensor& x, const torch::Tensor& mask, dist::Communicator* comm,
                     bool shift_mean = true);

// Clipped surrogate objective (as a loss to minimise), ratio = exp(logp - old_logp):
//   loss = masked_mean(max(-A * ratio, -A * clamp(ratio, 1 - c, 1 + c)))
// clip_fraction: share of valid tokens where the clipped term is the larger (the gradient is cut);
// approx_kl: masked_mean((ratio - 1) - log ratio), the k3 estimate of KL(old || new).
struct PolicyLossResult {
  torch::Tensor loss;  // scalar, with the graph through logp
  double clip_fraction = 0;
  double approx_kl = 0;
};
PolicyLossResult policy_loss(const torch::Tensor& logp, const torch::Tensor& old_logp, const torch::Tensor& advantages,
                             const torch::Tensor& mask, double clip_range);

// Clipped value loss: v_clip = old + clamp(v - old, -c, c);
//   loss = 0.5 * masked_mean(max((v - R)^2, (v_clip - R)^2));   c <= 0: 0.5 * masked_mean((v - R)^2).
// clip_fraction: share of valid tokens where the clipped term is the larger.
struct ValueLossResult {
  torch::Tensor loss;
  double clip_fraction = 0;
};
ValueLossResult value_loss(const torch::Tensor& values, const torch::Tensor& old_values, const torch::Tensor& returns,
                           const torch::Tensor& mask, double value_clip_range);

// Entropy of softmax(logits) per position, -sum_v p_v * log p_v: (B, T, V) -> (B, T), differentiable.
// Via log_softmax (stable for large logits); a logit of -inf (a masked-out token) adds 0 and its gradient
// stays finite. float64 logits stay float64; other dtypes are computed and returned in float32.
torch::Tensor entropy_from_logits(const torch::Tensor& logits);

// 1 - var(returns - values) / var(returns) over valid tokens (population variances); 0 when var(returns)
// is 0 (nothing to explain).
double explained_variance(const torch::Tensor& values, const torch::Tensor& returns, const torch::Tensor& mask);

// The KL coefficient: fixed, or adaptive (Ziegler et al. 2019) when target > 0:
//   err = clamp(kl / target - 1, -0.2, 0.2);  coef *= 1 + err * n_steps / horizon
class AdaptiveKLController {
 public:
  // target 0: a fixed coefficient (update does nothing). Throws reglage::Error when init_coef < 0,
  // target < 0 (not a meaningful KL), or horizon <= 0 with target > 0.
  AdaptiveKLController(double init_coef, double target, double horizon);
  double coef() const { return coef_; }
  void set_coef(double coef) { coef_ = coef; }
  // kl: the observed KL per sequence; n_steps: responses in the batch that observed it. The change per
  // call is at most a factor 1 +- 0.2 * n_steps / horizon.
  void update(double kl, int64_t n_steps);

 private:
  double coef_, target_, horizon_;
};

}  // namespace reglage::rl
