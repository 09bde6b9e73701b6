// Passes over rollout rows whose prompts repeat (GRPO's group_size copies of each prompt): each distinct
// prompt runs once into a KV cache, its rows share that cache, and only their responses run on top. Half of
// a GRPO row is often its prompt, so a pass computes about 1/2 + 1/(2 x copies) of the positions the
// row-by-row pass does, with the same attention (each response sees its own prompt and its own earlier
// tokens): the same log-probs up to float rounding. With gradients, the rows' gradients meet in their
// prompt's shared states, as they would sum over the copies.
#pragma once
#include <torch/torch.h>

#include <optional>

#include "trainers/ppo_rollout.h"

namespace reglage::trainers {

// (n, R) log p(response token) of every rollout row under softmax(logits / temperature) with the given
// adapters, without gradients, 0 past each response's end; an undefined tensor when no two rows share a
// prompt (then the row-by-row pass is as cheap).
torch::Tensor shared_prefix_logprobs(model::CausalLM& m, const Rollout& ro, const model::AdapterSet& adapters,
                                     double temperature);

// forward_policy's result for the rows idx (b) with gradients, when rows of idx share prompts and the
// shared pass computes what the row-by-row one does: no adapter dropout (a shared prompt would draw one
// mask for all its rows) and no activation checkpointing (a pass on a cache keeps its activations).
// nullopt otherwise.
std::optional<PolicyOutput> shared_prefix_policy(model::CausalLM& m, const Rollout& ro, const torch::Tensor& idx,
                                                 const RolloutSpec& spec);

}  // namespace reglage::trainers
