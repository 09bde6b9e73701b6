// Batched matrix products for attention: (G, M, K) x (G, K, N) -> (G, M, N), one product per thread.
// LibTorch 1.13's CPU bmm calls the BLAS once per batch entry, each call spread over every thread (and, with
// OpenBLAS, clearing the output with a scalar loop first): attention's products took 14% of a float32 LoRA SFT
// step on SmolLM2 at 8 x 256 (24 products of 768 x 64 x 256 per call). Here the batch entries are spread over
// the threads, each product runs on one (OpenBLAS stays single-threaded inside a parallel region) and
// accumulates into a cleared output: 10-20% faster at those shapes on 2 threads (AVX-512 VM). Backward uses
// the same products. bfloat16 keeps LibTorch's batched product (oneDNN's was faster there), with alpha as its
// output scale (baddbmm), forward and backward.
#pragma once
#include <torch/torch.h>

namespace reglage::kernels {

// alpha * a (G, M, K) @ b (G, K, N) -> (G, M, N); any strides; gradients for a and b. float32/float64 on the
// CPU; bfloat16 on the CPU to baddbmm with alpha as the output scale; anything else (another device, shapes
// that do not fit, entries under 64^3 multiply-adds) to torch::bmm (then scaled). alpha rides in the product:
// attention's 1/sqrt(Dh) costs no pass of its own.
torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b, double alpha = 1.0);

}  // namespace reglage::kernels
