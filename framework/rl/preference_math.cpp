#include "framework/rl/preference_math.h"

#include "framework/core/error.h"

namespace reglage::rl {

namespace F = torch::nn::functional;

torch::Tensor sequence_logprobs(const torch::Tensor& logits, const torch::Tensor& targets) {
  auto counted = targets.ne(-100);                                                    // (N, T)
  auto logp = torch::log_softmax(logits, -1);                                         // (N, T, V)
  auto picked = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1);      // (N, T)
  return (picked * counted.to(picked.scalar_type())).sum(-1);                        // (N)
}

DpoResult dpo_loss(const torch::Tensor& pi_c, const torch::Tensor& pi_r, const torch::Tensor& ref_c,
                   const torch::Tensor& ref_r, double beta, config::LossType loss, double label_smoothing) {
  auto rc = beta * (pi_c - ref_c);  // (n)
  auto rr = beta * (pi_r - ref_r);  // (n)
  auto h = rc - rr;
  torch::Tensor per_pair;
  switch (loss) {
    case config::LossType::kSigmoid:
      per_pair = -F::logsigmoid(h);
      break;
    case config::LossType::kCdpo:
      per_pair = -(1.0 - label_smoothing) * F::logsigmoid(h) - label_smoothing * F::logsigmoid(-h);
      break;
    case config::LossType::kIpo:
      per_pair = (h / beta - 1.0 / (2.0 * beta)).pow(2);
      break;
  }
  return {per_pair, rc.detach(), rr.detach()};
}

torch::Tensor chosen_nll(const torch::Tensor& pi_c, const torch::Tensor& chosen_tokens) {
  return -pi_c / chosen_tokens.to(pi_c.scalar_type()).clamp_min(1.0);
}

torch::Tensor group_advantages(const torch::Tensor& rewards, int64_t group_size, double eps) {
  if (group_size < 1 || rewards.numel() % group_size != 0)
    fail("group_advantages: ", rewards.numel(), " rewards do not split into groups of ", group_size);
  auto r = rewards.to(torch::kFloat64).view({-1, group_size});  // (G, group_size)
  auto mean = r.mean(1, /*keepdim=*/true);
  auto std = group_size > 1 ? r.std(1, /*unbiased=*/true, /*keepdim=*/true) : torch::zeros_like(mean);
  return ((r - mean) / (std + eps)).view({-1});
}

}  // namespace reglage::rl
