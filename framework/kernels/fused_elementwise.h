// Fused elementwise operators for training and no-grad passes: SwiGLU, RMSNorm, the rotary embedding and
// attention's masked softmax as one autograd node each, and the row softmax of the chunked log-prob head, on
// float32 and bfloat16 CPU tensors. Each reads its inputs once and computes in float32 (bfloat16 results rounded
// once), where the operator chains they replace ran four to seven passes over memory, in bfloat16 at a fraction
// of float32's speed. The loops are vectorised per instruction set (elementwise_simd.h), on the path cpu_path()
// names (weight_only.h).
#pragma once
#include <torch/torch.h>

namespace reglage::kernels {

// Whether the model takes the fused operators: on unless REGLAGE_FUSED_ELEMENTWISE=off, which keeps the
// operator chains they replace (for comparisons of speed and rounding).
bool fused_elementwise_enabled();

// Whether x takes the fused operators: enabled, and a float32 or bfloat16 tensor on the CPU.
bool fused_elementwise_fits(const torch::Tensor& x);

// silu(gate) * up; gate and up (..., F) of one dtype and shape that fused_elementwise_fits(). Backward gives
// both inputs' gradients.
torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up);

// RMSNorm as Hugging Face computes it: weight * stored(x / sqrt(mean(x^2) + eps)), statistics in float32, the
// normalised value rounded to x's dtype before the weight multiplies it. x (..., D), weight (D) of x's dtype.
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// x * cos + roll(x, Dh/2) * sin over the last dimension, computed in float32: x (B, T, heads, Dh) that
// fused_elementwise_fits(), tables cos, sin float32 broadcastable to (B, T, 1, Dh) (any leading dimensions: (N,
// heads, Dh) with (N, 1, Dh) as well), the sign of rotate_half in sin's first half (model/llama.cpp,
// rotary_tables). Backward gives x's gradient only.
torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// Attention's softmax with a mask, computed in float32 and returned in the scores' dtype: scores (B, heads, T,
// S) that fused_elementwise_fits(), blocked bool (B or 1, T, S), true where a query must not see a key. Blocked
// entries get probability 0; a query with nothing to attend to gets 1/S everywhere. Backward gives the scores'
// gradient from the saved probabilities.
torch::Tensor masked_softmax(const torch::Tensor& scores, const torch::Tensor& blocked);

// In place on z (N, V), float32, contiguous: returns logsumexp of each row (N) and leaves -softmax(z) in z.
torch::Tensor neg_softmax_rows_(torch::Tensor& z);

// In place on z (N, V), bfloat16, contiguous, with targets (N) int64 in [0, V): returns logsumexp of each row
// (N, float32) and leaves onehot(targets) - softmax(z) in z, the bits of neg_softmax_rows_ on z widened to
// float32, 1 added at each target and the result rounded to bfloat16 (a loss's gradient for a bfloat16 product).
torch::Tensor onehot_minus_softmax_rows_(torch::Tensor& z, const torch::Tensor& targets);

// out[i] = e^((z[i] - shift) / t) for i < n, in the calling thread, float32 arithmetic; returns their sum,
// added in an order that depends on n alone. A sampler's weights (shift: the largest logit, t: the temperature).
float exp_shifted(const float* z, float shift, float t, int64_t n, float* out);

}  // namespace reglage::kernels
