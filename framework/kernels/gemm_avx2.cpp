// The small-product kernel for AVX2 + FMA, 8 float lanes. Compiled with -mavx2 -mfma (CMakeLists.txt) and
// without the precompiled header; called only when the CPU reports both.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "framework/kernels/gemm_paths.h"

namespace {

#include "framework/kernels/gemm_simd.h"

struct V256 {
  using reg = __m256;
  // 12 accumulators + 3 weight vectors + 1 input: 16 of 16 (R1 x 1: 8 + 8 + 1). Widening int8 needs registers
  // of its own: 4 x 2 there (8 + 4 + 1), which at 16 input rows ran 1.25x faster than 3 x 4 spilling.
  static constexpr int W = 8, R = 3, MB = 4, R1 = 8, R_I8 = 4, MB_I8 = 2;
  static constexpr bool kPackedNarrow = false;  // element by element (gemm_simd.h, narrow_rows_m1)
  static constexpr int MR_B = 6, NV_B = 2;        // outer_tile: 12 accumulators + 2 of B + 1 broadcast
  static reg zero() { return _mm256_setzero_ps(); }
  static reg load_x(const float* p) { return _mm256_loadu_ps(p); }
  static reg load_w(const float* p) { return _mm256_loadu_ps(p); }
  static reg load_w(const uint16_t* p) {  // bfloat16 -> float32: zero-extend to 32 bits, shift into the top half
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
  static reg load_w(const int8_t* p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
  }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static float sum(reg a) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 h = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
  }
  static reg set1(float v) { return _mm256_set1_ps(v); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  // The first n (< W) lanes: outer_tile's last columns.
  static __m256i first(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
  static reg load_first(const float* p, int n) { return _mm256_maskload_ps(p, first(n)); }
  static void store_first(float* p, reg v, int n) { _mm256_maskstore_ps(p, first(n), v); }
};

}  // namespace

namespace reglage::kernels::detail {

void gemm_rows_avx2(const float* x, int64_t M, int64_t K, const void* w, int format, const float* scale,
                    float* y, int64_t N, int64_t n0, int64_t n1) {
  gemm_rows_any<V256>(x, M, K, w, format, scale, y, N, n0, n1);
}

void outer_rows_avx2(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                     int64_t ldc, int64_t K, int64_t N, int64_t m0, int64_t m1, float alpha, bool accumulate) {
  outer_rows<V256>(a, a_row, a_col, b, ldb, c, ldc, K, N, m0, m1, alpha, accumulate);
}

}  // namespace reglage::kernels::detail
