// Response log-probs of rollout rows whose prompts repeat (GRPO's group_size copies of each prompt), without
// gradients: each distinct prompt runs once into a KV cache, its rows share that cache, and only their
// responses run on top. Half of a GRPO row is often its prompt, so the reference pass computes about 1/2 +
// 1/(2 x group_size) of the positions the row-by-row pass does, with the same attention (each response sees
// its own prompt and its own earlier tokens): the same log-probs up to float rounding.
#pragma once
#include <torch/torch.h>

#include "trainers/ppo_rollout.h"

namespace reglage::trainers {

// (n, R) log p(response token) under softmax(logits / temperature) with the given adapters, 0 past each
// response's end; an undefined tensor when no two rows share a prompt (then the row-by-row pass is as cheap).
torch::Tensor shared_prefix_logprobs(model::CausalLM& m, const Rollout& ro, const model::AdapterSet& adapters,
                                     double temperature);

}  // namespace reglage::trainers
