// Products with a frozen weight, without OpenBLAS's zeroing pass.
// OpenBLAS computes C = alpha A B + beta C and, for beta = 0 (a fresh output), first clears C with a scalar
// store loop: on the AVX2 EPYC VM that pass was a tenth of a LoRA training step on SmolLM2 (perf:
// sgemm_beta_ZEN). Clearing the output with LibTorch's vectorised fill and accumulating into it (beta = 1)
// gave the same products 3-30% faster (N = 2048 rows of 576 -> 192, 1536 and 576 -> 49,152 columns). Other
// BLAS libraries (MKL, cuBLAS) write a fresh output in one pass: there the plain product is kept.
#pragma once
#include <torch/torch.h>

namespace reglage::kernels {

// a (M, K) @ b (K, N) -> (M, N), 2-D and of one floating dtype. bfloat16 operands are widened to float32 on
// CPUs that multiply faster in float32 (bf16_products.h).
torch::Tensor matmul_2d(const torch::Tensor& a, const torch::Tensor& b);

// c (M, N) += alpha a (M, K) @ b (K, N) in place, bfloat16 widened as matmul_2d does (the sum rounded once).
void addmm_2d_(torch::Tensor& c, const torch::Tensor& a, const torch::Tensor& b, double alpha = 1.0);

// The same two for a narrow product (LoRA's rank-r factors: r summed, or r columns out): LibTorch's own, and
// widened only where the CPU has no bfloat16 instructions (Bf16Products::kWidenedAll). On an Intel Xeon without
// AMX, where wide products are widened, LibTorch's rank-16 addmm_ took 0.78 ms and the widened one 1.28 ms.
torch::Tensor narrow_mm(const torch::Tensor& a, const torch::Tensor& b);
void narrow_addmm_(torch::Tensor& c, const torch::Tensor& a, const torch::Tensor& b, double alpha = 1.0);

// y (N, out) = x (N, in) W^T + bias for a weight (and bias) that wants no gradient; x may want one, whose
// gradient g W comes through matmul_2d too. Any other case (a weight being trained, another dtype or
// shape) goes to torch::nn::functional::linear.
torch::Tensor frozen_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias);

// Whether LibTorch's BLAS in this process is OpenBLAS: then matmul_2d takes the clear-then-accumulate path, and
// the LoRA layer orients its narrow products for OpenBLAS (lora_fused.cpp).
bool blas_is_openblas();

}  // namespace reglage::kernels
