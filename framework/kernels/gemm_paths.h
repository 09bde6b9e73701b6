// Entry points of the small-product kernel, one per instruction set (gemm_simd.h has the kernel itself).
// Rows [n0, n1) of y (M, N) = x (M, K) W^T with W (N, K) in `format` (gemm_simd.h: kGemmF32, kGemmBF16,
// kGemmI8) and an optional per-row scale. Each must only be called when the CPU has its instructions.
#pragma once
#include <cstdint>

namespace reglage::kernels::detail {

void gemm_rows_avx512(const float* x, int64_t M, int64_t K, const void* w, int format, const float* scale,
                      float* y, int64_t N, int64_t n0, int64_t n1);
void gemm_rows_avx2(const float* x, int64_t M, int64_t K, const void* w, int format, const float* scale,
                    float* y, int64_t N, int64_t n0, int64_t n1);
void gemm_rows_scalar(const float* x, int64_t M, int64_t K, const void* w, int format, const float* scale,
                      float* y, int64_t N, int64_t n0, int64_t n1);


// Rows [m0, m1) of c (., N) = alpha a (., K) b (K, N) (+ c when accumulate), the outer-product kernel of
// gemm_simd.h (outer_rows): a[m, k] at a[m * a_row + k * a_col]; b and c row-major with row strides ldb, ldc.
void outer_rows_avx512(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                       int64_t ldc, int64_t K, int64_t N, int64_t m0, int64_t m1, float alpha, bool accumulate);
void outer_rows_avx2(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                     int64_t ldc, int64_t K, int64_t N, int64_t m0, int64_t m1, float alpha, bool accumulate);
void outer_rows_scalar(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                       int64_t ldc, int64_t K, int64_t N, int64_t m0, int64_t m1, float alpha, bool accumulate);

// bfloat16 pair kernels (low_rank_bf16.cpp), for CPUs with AVX-512 BF16 only. A pair word holds two bfloat16
// of consecutive k (low half: the even one), the operand form of vdpbf16ps.
// out ((K + 1) / 2, rp) = the rows of a (K, r), row stride lda, paired along K (the odd last with zero); lanes
// r..rp (rp a multiple of 16) are zeros.
void pack_pairs_bf16_avx512(const uint16_t* a, int64_t lda, int64_t K, int64_t r, uint32_t* out, int64_t rp);
// Columns [n0, n1) of c (r, .) = alpha a^T b, summed over k: a as pack_pairs_bf16_avx512's (K, r) pairs, b (K, .)
// bfloat16 with row stride ldb, c float32 with row stride ldc.
void pair_reduce_bf16_avx512(const uint32_t* a_pairs, int64_t rp, int64_t r, const uint16_t* b, int64_t ldb,
                             int64_t K, float* c, int64_t ldc, float alpha, int64_t n0, int64_t n1);
// Rows [i0, i1) of t (., r) = x (., K) f^T: x bfloat16 with row stride ldx, f (r, K) as the pairs of f^T (K, r),
// t float32 with row stride ldt.
void pair_rows_bf16_avx512(const uint16_t* x, int64_t ldx, const uint32_t* f_pairs, int64_t rp, int64_t r, int64_t K,
                           float* t, int64_t ldt, int64_t i0, int64_t i1);

}  // namespace reglage::kernels::detail
