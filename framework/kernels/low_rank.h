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

// Whether the bfloat16 kernels (low_rank_bf16.cpp, vdpbf16ps) take x's products: a bfloat16 CPU tensor, on
// the avx512 path of a CPU with avx512_bf16 and without AMX (where oneDNN's products use the tile unit; not
// measured here). At SmolLM2's shapes (2,048 tokens, rank 16) they ran at 340-400 GFLOP/s against oneDNN's
// 160-310 (best of 15, 2 threads, AVX-512 VM).
bool low_rank_bf16_fits(const torch::Tensor& x);

// t (M, r) = x (M, K) f^T for a narrow f (r, K), split among LibTorch's threads by rows of x. float32 x and f:
// the dot-product kernel of the weight-only path. bfloat16 x (low_rank_bf16_fits): f of any floating dtype,
// rounded to bfloat16, pairs summed by vdpbf16ps into float32. Returns float32.
torch::Tensor narrow_rows_product(const torch::Tensor& x, const torch::Tensor& f);

// c (r, N) float32 = alpha a^T b, the sum over the K rows (tokens) of a (K, r) and b (K, N): an adapter's
// weight gradient. Both bfloat16 (low_rank_bf16_fits), b with unit column stride; split among threads by
// 16-column blocks of c.
torch::Tensor tokens_product_bf16(const torch::Tensor& a, const torch::Tensor& b, double alpha);

// c (M, N) = alpha a (M, K) b (K, N), or c += that when accumulate. a: float32 through any strides (a
// transpose is read in place); b: unit column stride; c: contiguous. Split among threads by rows of c, or
// by blocks of columns when c has few rows (an adapter's gradient: r rows, K = the tokens).
void outer_product_(torch::Tensor& c, const torch::Tensor& a, const torch::Tensor& b, double alpha, bool accumulate);
// The same into a fresh c (M, N).
torch::Tensor outer_product(const torch::Tensor& a, const torch::Tensor& b, double alpha);

// Rows [m0, m1) of c (., N) = alpha a (., K) b (K, N) (+ c when accumulate) on raw float32 buffers, in the
// calling thread, on this CPU's path (only where low_rank_fits holds): a[m, k] at a[m * a_row + k * a_col]; b
// and c row-major with row strides ldb and ldc. For callers that split the work themselves (batched_matmul).
void outer_product_rows(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                        int64_t ldc, int64_t K, int64_t N, int64_t m0, int64_t m1, float alpha, bool accumulate);

namespace detail {
// outer_product_ on one path ("avx512", "avx2", "scalar"), in the calling thread, for tests.
void outer_product_on(const std::string& path, torch::Tensor& c, const torch::Tensor& a, const torch::Tensor& b,
                      double alpha, bool accumulate);
}  // namespace detail

}  // namespace reglage::kernels
