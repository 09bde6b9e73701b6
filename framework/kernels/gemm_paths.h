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

}  // namespace reglage::kernels::detail
