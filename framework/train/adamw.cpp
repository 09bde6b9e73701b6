#include "framework/train/adamw.h"

#include <cmath>

#include "framework/core/error.h"

namespace reglage::train {

AdamW::AdamW(std::vector<torch::Tensor> params, std::vector<std::string> names, AdamWConfig cfg)
    : params_(std::move(params)), names_(std::move(names)), cfg_(cfg) {
  if (params_.size() != names_.size()) fail("AdamW: ", params_.size(), " parameters but ", names_.size(), " names");
  torch::NoGradGuard no_grad;
  for (auto& p : params_) {
    const bool needs_master = p.scalar_type() != torch::kFloat32;
    master_.push_back(needs_master ? p.detach().to(torch::kFloat32).clone() : torch::Tensor());
    exp_avg_.push_back(torch::zeros(p.sizes(), p.options().dtype(torch::kFloat32)));
    exp_avg_sq_.push_back(torch::zeros(p.sizes(), p.options().dtype(torch::kFloat32)));
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++steps_;
  const double bias1 = 1.0 - std::pow(cfg_.beta1, double(steps_));
  const double bias2 = 1.0 - std::pow(cfg_.beta2, double(steps_));
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i];
    auto w = master_[i].defined() ? master_[i] : p;  // float32 weights to update
    auto g = p.grad().defined() ? p.grad().to(torch::kFloat32) : torch::zeros_like(w);
    // decoupled decay: w <- w - lr * wd * w
    if (cfg_.weight_decay > 0 && p.dim() >= 2) w.mul_(1.0 - lr * cfg_.weight_decay);
    exp_avg_[i].mul_(cfg_.beta1).add_(g, 1.0 - cfg_.beta1);
    exp_avg_sq_[i].mul_(cfg_.beta2).addcmul_(g, g, 1.0 - cfg_.beta2);
    auto denom = (exp_avg_sq_[i] / bias2).sqrt_().add_(cfg_.eps);
    w.addcdiv_(exp_avg_[i], denom, -lr / bias1);
    if (master_[i].defined()) p.copy_(w);  // round the master into the stored dtype
  }
}

void AdamW::zero_grad() {
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
}

std::vector<std::pair<std::string, torch::Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("exp_avg." + names_[i], exp_avg_[i]);
    out.emplace_back("exp_avg_sq." + names_[i], exp_avg_sq_[i]);
    if (master_[i].defined()) out.emplace_back("master." + names_[i], master_[i]);
  }
  return out;
}

void AdamW::load_state(const std::map<std::string, torch::Tensor>& tensors, int64_t steps) {
  torch::NoGradGuard no_grad;
  auto take = [&](const std::string& key, torch::Tensor& into) {
    auto it = tensors.find(key);
    if (it == tensors.end()) fail("optimizer state has no tensor '", key, "'");
    if (it->second.sizes() != into.sizes())
      fail("optimizer state '", key, "' has shape ", it->second.sizes(), ", expected ", into.sizes());
    into.copy_(it->second);
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    take("exp_avg." + names_[i], exp_avg_[i]);
    take("exp_avg_sq." + names_[i], exp_avg_sq_[i]);
    if (master_[i].defined()) take("master." + names_[i], master_[i]);
  }
  steps_ = steps;
}

double clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  double sum_sq = 0;
  for (const auto& p : params)
    if (p.grad().defined()) sum_sq += p.grad().to(torch::kFloat64).pow(2).sum().item<double>();
  const double norm = std::sqrt(sum_sq);
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (const auto& p : params)
      if (p.grad().defined()) p.grad().mul_(scale);
  }
  return norm;
}

double scheduled_lr(int64_t step, int64_t total, double lr, int64_t warmup, config::Schedule schedule,
                    double min_ratio) {
  if (warmup > 0 && step < warmup) return lr * double(step + 1) / double(warmup);
  const int64_t decay_steps = total - warmup;
  if (schedule == config::Schedule::kConstant || decay_steps <= 1) return lr;
  const double progress = double(step - warmup) / double(decay_steps - 1);  // 0 .. 1
  const double min_lr = lr * min_ratio;
  switch (schedule) {
    case config::Schedule::kLinear: return min_lr + (lr - min_lr) * (1.0 - progress);
    case config::Schedule::kCosine: return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
    case config::Schedule::kConstant: break;
  }
  return lr;
}

}  // namespace reglage::train
