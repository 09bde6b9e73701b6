// Batched generation with a KV cache: prompts of different lengths share one batch (left padding, a key
// mask and per-sequence rotary positions), so each prompt gets what it would get alone.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "framework/generate/sampler.h"
#include "framework/model/llama.h"

namespace reglage::generate {

struct Generation {
  std::vector<int64_t> tokens;  // generated ids, the stop token included when one ended the sequence
  std::vector<float> logprobs;  // one per generated token (see Choice::logprob)
  bool stopped = false;         // true when a stop token ended it, false when max_new_tokens did
};

// Generates a continuation for every prompt (token ids, BOS included when the model wants one) with the
// given adapters active. Throws when a prompt is empty or prompt + max_new_tokens exceeds the context.
std::vector<Generation> generate(model::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                                 const SamplingParams& params, const model::AdapterSet& adapters = {});

}  // namespace reglage::generate
