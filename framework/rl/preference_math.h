// The math of DPO and GRPO as small pure functions, so tests can check each against hand-computed values.
// Nothing here touches a model.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "framework/config/choices.h"

namespace reglage::rl {

// Summed log-probability of each row's target tokens: logits (N, T, V) predicting targets (N, T) int64,
// where -100 marks a position that is not counted (prompt, padding). -> (N), with the graph through logits.
torch::Tensor sequence_logprobs(const torch::Tensor& logits, const torch::Tensor& targets);

// DPO-family losses per pair from the summed log-probabilities of the chosen (c) and rejected (r) responses
// under the policy (pi) and the reference (ref), each (n):
//   implicit rewards  rc = beta * (pi_c - ref_c),  rr = beta * (pi_r - ref_r);   h = rc - rr
//   sigmoid (DPO, Rafailov et al. 2023):    -log sigmoid(h)
//   cdpo (conservative DPO, labels flipped with probability eps = label_smoothing):
//                                           -(1 - eps) log sigmoid(h) - eps log sigmoid(-h)
//   ipo (Azar et al. 2023):                 (h / beta - 1 / (2 beta))^2
struct DpoResult {
  torch::Tensor loss;             // (n), with the graph through pi_c and pi_r
  torch::Tensor chosen_reward;    // (n) rc, no graph
  torch::Tensor rejected_reward;  // (n) rr, no graph
};
DpoResult dpo_loss(const torch::Tensor& pi_c, const torch::Tensor& pi_r, const torch::Tensor& ref_c,
                   const torch::Tensor& ref_r, double beta, config::LossType loss, double label_smoothing);

// The RPO term (Pang et al. 2024): the chosen responses' negative log-likelihood per token,
// -pi_c / chosen_tokens, each (n) -> (n), with the graph through pi_c. A row with no tokens counts as one.
torch::Tensor chosen_nll(const torch::Tensor& pi_c, const torch::Tensor& chosen_tokens);

// GRPO advantages: rewards (G * group_size) laid out group after group -> (reward - group mean) /
// (group std + eps), the std unbiased (n - 1; 0 for a group of one). A group whose rewards are all equal
// gets 0 everywhere. float64 in, float64 out, no graph.
torch::Tensor group_advantages(const torch::Tensor& rewards, int64_t group_size, double eps = 1e-6);

}  // namespace reglage::rl
