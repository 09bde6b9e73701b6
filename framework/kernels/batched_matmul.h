// Batched matrix products for attention: (G, M, K) x (G, K, N) -> (G, M, N).
// LibTorch 1.13's CPU bmm calls the BLAS once per batch entry, each call spread over every thread (and, with
// OpenBLAS, clearing the output with a scalar loop first): attention's products took 14% of a float32 LoRA SFT
// step on SmolLM2 at 8 x 256 (24 products of 768 x 64 x 256 per call). Here float32 on a vector path runs in
// the outer-product kernel of low_rank.h over tasks of (batch entry, block of rows): alternating LoRA SFT
// steps on SmolLM2 took 5.22-5.26 s against 5.38-5.49 s with one OpenBLAS product per entry and thread (Intel
// Xeon VM); float64 and float32 without a vector path keep one BLAS product per entry and thread (OpenBLAS
// stays single-threaded inside a parallel region; 10-20% faster than bmm on an AVX-512 EPYC). Backward uses the
// same products. bfloat16 keeps LibTorch's batched product (oneDNN's was faster there), with alpha as its output
// scale (baddbmm), forward and backward, unless its products are widened to float32 (bf16_products.h).
#pragma once
#include <torch/torch.h>

namespace reglage::kernels {

// alpha * a (G, M, K) @ b (G, K, N) -> (G, M, N); any strides; gradients for a and b. float32/float64 on the
// CPU; bfloat16 on the CPU to baddbmm with alpha as the output scale; anything else (another device, shapes
// that do not fit, entries under 64^3 multiply-adds) to torch::bmm (then scaled). alpha rides in the product:
// attention's 1/sqrt(Dh) costs no pass of its own.
torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b, double alpha = 1.0);

}  // namespace reglage::kernels
