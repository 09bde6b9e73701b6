// Products with one narrow side, the shapes of LoRA's adapters (rank r of 4-64 against thousands of tokens and
// features), in float32 by our own kernels (gemm_simd.h) on this CPU's vector path. OpenBLAS runs such shapes
// far below its large-product speed: in a float32 LoRA step on SmolLM2 (2,048 tokens, rank 16) the adapters'
// products did 5% of the arithmetic in 10-12% of the time, at 36-94 GFLOP/s beside a 170-200 GFLOP/s peak.
// Each output element sums its products in order, whatever the split among threads.
#pragma once
#include <torch/torch.h>

#include <string>

namespace reglage::kernels {

// Whether these kernels take x's products: a float32 CPU tensor on a vector path (cpu_path() avx512 or avx2).
bool low_rank_fits(const torch::Tensor& x);

// t (M, r) = x (M, K) f^T for a narrow f (r, K): the dot-product kernel of the weight-only path, x's rows
// split among LibTorch's threads. x and f float32 CPU; f contiguous.
torch::Tensor narrow_rows_product(const torch::Tensor& x, const torch::Tensor& f);

// c (M, N) = alpha a (M, K) b (K, N), or c += that when accumulate. a: float32 through any strides (a
// transpose is read in place); b: unit column stride; c: contiguous. Split among threads by rows of c, or
// by blocks of columns when c has few rows (an adapter's gradient: r rows, K = the tokens).
void outer_product_(torch::Tensor& c, const torch::Tensor& a, const torch::Tensor& b, double alpha, bool accumulate);
// The same into a fresh c (M, N).
torch::Tensor outer_product(const torch::Tensor& a, const torch::Tensor& b, double alpha);

namespace detail {
// outer_product_ on one path ("avx512", "avx2", "scalar"), in the calling thread, for tests.
void outer_product_on(const std::string& path, torch::Tensor& c, const torch::Tensor& a, const torch::Tensor& b,
                      double alpha, bool accumulate);
}  // namespace detail

}  // namespace reglage::kernels
