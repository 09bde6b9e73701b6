// A LoRA layer's forward and backward as one autograd node:
//   y = x W^T + b + sum_a scale_a (x A_a^T) B_a^T
// over a frozen base weight W in any storage (float32, or bfloat16 / int8 weight-only). Against one node for
// the base product and four LibTorch operators per adapter (linear, addmm and their backward nodes), it saves
// the per-operator dispatch, forms the adapter's input gradient in place on the base's (no (N, in) sum of two
// gradients), and keeps each adapter's small product t = x A^T from forward for B's gradient. In float32 on a
// vector path the adapters' products run in our own kernels (kernels/low_rank.h), and the output and x's
// gradient are first written by the adapters' terms, then the base's product is accumulated onto them (no
// clearing pass, no second read and write of the output); elsewhere (bfloat16 compute, no AVX2) LibTorch's
// products, the small ones oriented the way OpenBLAS runs them fastest.
#pragma once
#include <torch/torch.h>

#include <vector>

namespace reglage::lora {

// One active adapter on the layer: A (r, in) and B (out, r) float32, y gains scale * (x A^T) B^T.
struct LoraTerm {
  torch::Tensor A, B;
  double scale = 1.0;
};

// Whether fused_lora_linear computes this layer: CPU; float32 input on a float32, bfloat16 or int8 base, or
// bfloat16 input on a bfloat16 base (the adapter then computes in bfloat16 on casts of its weights, as
// autocast does); float32 adapters; a base weight (and bias) that wants no gradient. Anything else (adapter
// dropout, a trained base, float64) keeps the operator path in LinearImpl::forward.
bool fused_lora_fits(const torch::Tensor& x2, const torch::Tensor& weight, const torch::Tensor& bias,
                     const std::vector<LoraTerm>& terms);

// x2 (N, in) -> y (N, out). weight (out, in) in any storage with weight_scale for int8 (else undefined); bias
// (out) or undefined. Differentiable in x2 and in every A and B that wants a gradient.
torch::Tensor fused_lora_linear(const torch::Tensor& x2, const torch::Tensor& weight,
                                const torch::Tensor& weight_scale, const torch::Tensor& bias,
                                const std::vector<LoraTerm>& terms);

}  // namespace reglage::lora
