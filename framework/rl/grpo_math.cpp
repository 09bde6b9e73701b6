#include "framework/rl/grpo_math.h"

#include "framework/rl/ppo_math.h"

namespace reglage::rl {

GrpoLossResult grpo_loss(const torch::Tensor& logp, const torch::Tensor& old_logp, const torch::Tensor& ref_logp,
                         const torch::Tensor& advantages, const torch::Tensor& mask, double clip_range, double beta) {
  auto m = mask.to(logp.scalar_type());                                    // (b, R)
  auto a = advantages.to(logp.scalar_type()).unsqueeze(1);                 // (b, 1): one advantage per response
  // Padding positions are zeroed before any exp, so a very unlikely pad token cannot overflow to inf (and
  // inf * 0 = NaN); there the ratio is 1 and the KL 0.
  auto valid = m > 0;                                                      // (b, R)
  auto zero = torch::zeros_like(logp);
  auto lp = torch::where(valid, logp, zero);                               // (b, R)
  auto ratio = (lp - torch::where(valid, old_logp, zero)).exp();           // (b, R)
  auto unclipped = -a * ratio;
  auto clipped = -a * ratio.clamp(1.0 - clip_range, 1.0 + clip_range);
  auto surrogate = torch::max(unclipped, clipped);                         // (b, R)
  auto kl = kl_estimate(lp, torch::where(valid, ref_logp, zero), config::KlEstimator::kK3);                           // (b, R), graph through logp
  auto tokens = m.sum(1).clamp_min(1.0);                                   // (b)
  auto per_token = beta == 0.0 ? surrogate : surrogate + beta * kl;        // (b, R)
  GrpoLossResult out;
  out.per_sample = (per_token * m).sum(1) / tokens;                        // (b): mean over the response's tokens
  out.loss = out.per_sample.mean();                                        // mean over responses
  torch::NoGradGuard no_grad;
  out.policy_loss = ((surrogate.detach() * m).sum(1) / tokens).mean().item<double>();
  out.kl = ((kl.detach() * m).sum(1) / tokens).mean().item<double>();
  out.clip_fraction = masked_mean((clipped > unclipped).to(m.scalar_type()), m).item<double>();
  return out;
}

}  // namespace reglage::rl
