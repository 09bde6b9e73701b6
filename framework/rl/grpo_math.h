// The GRPO objective (Shao et al. 2024, "DeepSeekMath") as a small pure function on response-aligned
// tensors, so tests can check it against hand-computed values. Group advantages are
// rl::group_advantages (preference_math.h); the k3 KL estimate is rl::kl_estimate (ppo_math.h).
// Shapes: b responses, R response tokens (right-padded); mask (b, R) is 1.0 on a real token, 0.0 on padding.
#pragma once
#include <torch/torch.h>

namespace reglage::rl {

// The GRPO loss of a minibatch, to minimise. Per token t of response i, with ratio = exp(logp - old_logp)
// and the response's advantage A_i (the same for every token of the response):
//   surrogate_it = max(-A_i * ratio_it, -A_i * clamp(ratio_it, 1 - c, 1 + c))        (clipped objective)
//   kl_it        = exp(ref_logp_it - logp_it) - 1 - (ref_logp_it - logp_it)           (k3, >= 0)
//   per_sample_i = sum_t m_it * (surrogate_it + beta * kl_it) / max(sum_t m_it, 1)
//   loss         = mean_i per_sample_i
// i.e. each response's tokens are averaged first, then the responses (the paper's
// 1/G sum_i 1/|o_i| sum_t), so a long response weighs as much as a short one. beta = 0 drops the KL term.
struct GrpoLossResult {
  torch::Tensor loss;         // scalar, with the graph through logp
  torch::Tensor per_sample;   // (b) per_sample_i, with the graph
  double policy_loss = 0;     // mean over responses of the per-response mean surrogate (no KL term)
  double kl = 0;              // mean over responses of the per-response mean k3
  double clip_fraction = 0;   // share of valid tokens where the clipped term is the larger (the gradient is cut)
};
GrpoLossResult grpo_loss(const torch::Tensor& logp, const torch::Tensor& old_logp, const torch::Tensor& ref_logp,
                         const torch::Tensor& advantages, const torch::Tensor& mask, double clip_range, double beta);

}  // namespace reglage::rl
