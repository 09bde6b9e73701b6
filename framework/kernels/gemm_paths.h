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

}  // namespace reglage::kernels::detail
