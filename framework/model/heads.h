// Scalar heads on the final hidden state: the critic's value head (one value per token) and the reward
// model's head (one score per sequence, read at the last non-padding token). The LM head lives in CausalLM.
#pragma once
#include <torch/torch.h>

#include <cstdint>

namespace reglage::model {

class ScalarHeadImpl : public torch::nn::Module {
 public:
  // weight ~ N(0, 1/(D+1)) from `seed`, bias 0; float32 whatever the base dtype.
  ScalarHeadImpl(int64_t dim, uint64_t seed);
  // hidden: (B, T, D) -> (B, T) float32, one scalar per position.
  torch::Tensor forward(const torch::Tensor& hidden);
  torch::Tensor weight;  // (1, D)
  torch::Tensor bias;    // (1)
};
TORCH_MODULE(ScalarHead);

// The value at each sequence's last valid position: values (B, T), valid (B, T) bool -> (B).
// Works for left and right padding: the last position whose valid flag is set.
torch::Tensor gather_last_valid(const torch::Tensor& values, const torch::Tensor& valid);

}  // namespace reglage::model
