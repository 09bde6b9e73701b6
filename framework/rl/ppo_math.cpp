#include "framework/rl/ppo_math.h"

#include <algorithm>
#include <cmath>

#include "framework/core/error.h"

namespace reglage::rl {

torch::Tensor masked_sum(const torch::Tensor& x, const torch::Tensor& mask) { return (x * mask).sum(); }

torch::Tensor masked_mean(const torch::Tensor& x, const torch::Tensor& mask) {
  return masked_sum(x, mask) / mask.sum().clamp_min(1.0);
}

torch::Tensor kl_estimate(const torch::Tensor& logp, const torch::Tensor& ref_logp, config::KlEstimator estimator) {
  if (estimator == config::KlEstimator::kK1) return logp - ref_logp;
  auto log_ratio = ref_logp - logp;  // k3; log(pi_ref / pi)
  // expm1 keeps it >= 0 in float32 for tiny |log_ratio|, where exp(d) - 1 - d rounds below 0.
  return torch::expm1(log_ratio) - log_ratio;
}

torch::Tensor token_rewards(const torch::Tensor& scores, const torch::Tensor& kl, const torch::Tensor& mask,
                            double kl_coef) {
  torch::NoGradGuard no_grad;
  auto m = mask.detach().to(kl.scalar_type());   // (B, T)
  auto rewards = -kl_coef * kl.detach() * m;     // (B, T)
  const int64_t T = m.size(1);
  // Index of the last valid token of each row: the first valid one counted from the right.
  auto valid = m > 0;                                               // (B, T)
  auto last = (T - 1) - valid.flip({1}).to(torch::kLong).argmax(1); // (B)
  auto has_token = valid.any(1).to(rewards.scalar_type());          // (B): 0 for an all-padding row
  auto bonus = (scores.detach().to(rewards.scalar_type()) * has_token).unsqueeze(1);  // (B, 1)
  rewards.scatter_add_(1, last.unsqueeze(1), bonus);
  return rewards;
}

GaeResult gae(const torch::Tensor& rewards, const torch::Tensor& values, const torch::Tensor& mask, double gamma,
              double lam) {
  torch::NoGradGuard no_grad;
  // A sequential scan over t: done on the CPU in float64 with accessors.
  auto r = rewards.detach().to(torch::kCPU, torch::kFloat64).contiguous();  // (B, T)
  auto v = values.detach().to(torch::kCPU, torch::kFloat64).contiguous();   // (B, T)
  auto m = mask.detach().to(torch::kCPU, torch::kFloat64).contiguous();     // (B, T)
  const int64_t B = r.size(0), T = r.size(1);
  auto adv = torch::zeros({B, T}, torch::kFloat64);
  auto ra = r.accessor<double, 2>(), va = v.accessor<double, 2>(), ma = m.accessor<double, 2>();
  auto aa = adv.accessor<double, 2>();
  for (int64_t b = 0; b < B; ++b) {
    double next_adv = 0, next_value = 0, next_mask = 0;  // beyond the end: the episode is over
    for (int64_t t = T - 1; t >= 0; --t) {
      const double delta = ra[b][t] + gamma * next_value * next_mask - va[b][t];
      const double a = delta + gamma * lam * next_mask * next_adv;
      aa[b][t] = a * ma[b][t];
      next_adv = a, next_value = va[b][t], next_mask = ma[b][t];
    }
  }
  GaeResult out;
  out.advantages = adv.to(rewards.device(), rewards.scalar_type());
  out.returns = ((adv + v) * m).to(rewards.device(), rewards.scalar_type());
  return out;
}

torch::Tensor whiten(const torch::Tensor& x, const torch::Tensor& mask, dist::Communicator* comm, bool shift_mean) {
  torch::NoGradGuard no_grad;
  auto xd = x.detach().to(torch::kFloat64), md = mask.detach().to(torch::kFloat64);
  auto moments = torch::stack({md.sum(), (xd * md).sum(), (xd * xd * md).sum()});  // (3): count, sum, sum of squares
  if (comm != nullptr) comm->all_reduce_sum(moments, "allreduce whiten moments");
  const double n = moments[0].item<double>(), sum = moments[1].item<double>(), sq = moments[2].item<double>();
  if (n <= 0) return torch::zeros_like(x);
  const double mean = sum / n;
  double var = std::max(0.0, sq / n - mean * mean);  // population
  if (n > 1) var *= n / (n - 1);                       // unbiased
  auto w = (xd - mean) / std::sqrt(var + 1e-8);
  if (!shift_mean) w = w + mean;
  return (w * md).to(x.scalar_type());
}

PolicyLossResult policy_loss(const torch::Tensor& logp, const torch::Tensor& old_logp, const torch::Tensor& advantages,
                             const torch::Tensor& mask, double clip_range) {
  auto ratio = (logp - old_logp).exp();
  auto unclipped = -advantages * ratio;
  auto clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range);
  PolicyLossResult out;
  out.loss = masked_mean(torch::max(unclipped, clipped), mask);
  torch::NoGradGuard no_grad;
  out.clip_fraction = masked_mean((clipped > unclipped).to(mask.scalar_type()), mask).item<double>();
  auto r = ratio.detach();
  out.approx_kl = masked_mean((r - 1) - r.log(), mask).item<double>();
  return out;
}

ValueLossResult value_loss(const torch::Tensor& values, const torch::Tensor& old_values, const torch::Tensor& returns,
                           const torch::Tensor& mask, double value_clip_range) {
  ValueLossResult out;
  auto plain = (values - returns).pow(2);
  if (value_clip_range <= 0) {
    out.loss = 0.5 * masked_mean(plain, mask);
    return out;
  }
  auto v_clip = old_values + (values - old_values).clamp(-value_clip_range, value_clip_range);
  auto clipped = (v_clip - returns).pow(2);
  out.loss = 0.5 * masked_mean(torch::max(plain, clipped), mask);
  torch::NoGradGuard no_grad;
  out.clip_fraction = masked_mean((clipped > plain).to(mask.scalar_type()), mask).item<double>();
  return out;
}

torch::Tensor entropy_from_logits(const torch::Tensor& logits) {
  auto x = logits.scalar_type() == torch::kFloat64 ? logits : logits.to(torch::kFloat32);
  auto logp = torch::log_softmax(x, -1);  // (B, T, V)
  auto p = logp.exp();                    // (B, T, V)
  // p * log p is 0 * -inf = NaN where p == 0 (a -inf logit, or underflow); its limit is 0.
  return -(p * logp.masked_fill(p == 0, 0.0)).sum(-1);
}

double explained_variance(const torch::Tensor& values, const torch::Tensor& returns, const torch::Tensor& mask) {
  torch::NoGradGuard no_grad;
  auto m = mask.to(torch::kFloat64);
  const double n = m.sum().item<double>();
  if (n <= 0) return 0.0;
  auto var = [&](const torch::Tensor& x) {
    auto xd = x.to(torch::kFloat64);
    const double mean = (xd * m).sum().item<double>() / n;
    return ((xd - mean).pow(2) * m).sum().item<double>() / n;
  };
  const double var_returns = var(returns);
  if (var_returns <= 0) return 0.0;
  return 1.0 - var(returns - values) / var_returns;
}

AdaptiveKLController::AdaptiveKLController(double init_coef, double target, double horizon)
    : coef_(init_coef), target_(target), horizon_(horizon) {
  if (!(init_coef >= 0)) fail("kl_coef = ", init_coef, " (must be >= 0)");
  if (!(target >= 0)) fail("kl_target = ", target, " (must be >= 0; 0 = fixed coefficient)");
  if (target > 0 && !(horizon > 0)) fail("kl_horizon = ", horizon, " (must be > 0 with an adaptive coefficient)");
}

void AdaptiveKLController::update(double kl, int64_t n_steps) {
  if (target_ <= 0) return;
  const double err = std::clamp(kl / target_ - 1.0, -0.2, 0.2);
  coef_ *= 1.0 + err * double(n_steps) / horizon_;
}

}  // namespace reglage::rl
