// Prefill of prompts that repeat (GRPO's group_size copies of each): every distinct prompt runs once,
// left-padded to the longest (positions from 0), into a KV cache whose rows are then copied to each
// sequence that starts with it. Used by generation and by the RL passes over finished rollouts.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "framework/model/llama.h"

namespace reglage::generate {

// Sequences grouped by their prompt, in order of first appearance.
struct PromptGroups {
  std::vector<std::vector<int64_t>> distinct;  // (U) the distinct prompts
  std::vector<int64_t> source;                 // (B) the distinct prompt of each sequence
};
PromptGroups group_prompts(const std::vector<std::vector<int64_t>>& prompts);

struct Prefill {
  torch::Tensor last;   // (U, D) the state at each distinct prompt's last position (it predicts the next token)
  model::KVCache cache;  // B rows (row b holds prompt source[b]), room for `room` positions past the longest prompt
};
// Runs the distinct prompts of `groups` (non-empty, ids in the vocabulary) with the given adapters into a
// new cache of (longest prompt + room) positions; padding slots hold pad_id. With gradients when grad mode
// is on.
Prefill prefill_prompts(model::CausalLM& m, const PromptGroups& groups, int64_t room,
                        const model::AdapterSet& adapters, int64_t pad_id = 0);

}  // namespace reglage::generate
