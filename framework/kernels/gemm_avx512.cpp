// The small-product kernel for AVX-512 (F + BW), 16 float lanes. Compiled with -mavx512f -mavx512bw -mfma
// (CMakeLists.txt) and without the precompiled header; called only when the CPU reports both.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "framework/kernels/gemm_paths.h"

namespace {

#include "framework/kernels/gemm_simd.h"

struct V512 {
  using reg = __m512;
  static constexpr int W = 16, R = 4, MB = 4, R1 = 8, R_I8 = 4, MB_I8 = 4;  // 16 accumulators + 4 weight vectors + 1 input: 21 of 32
  static constexpr bool kPackedNarrow = true;  // packed loads (gemm_simd.h, narrow_rows_m1)
  static constexpr int MR_B = 4, NV_B = 4;       // outer_tile: 16 accumulators + 4 of B + 1 broadcast
  static reg zero() { return _mm512_setzero_ps(); }
  static reg load_x(const float* p) { return _mm512_loadu_ps(p); }
  static reg load_w(const float* p) { return _mm512_loadu_ps(p); }
  static reg load_w(const uint16_t* p) {  // bfloat16 -> float32: zero-extend to 32 bits, shift into the top half
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
  static reg load_w(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static void load_bf16_pair(const uint16_t* p, reg& even, reg& odd) {
    const __m512i v = _mm512_loadu_si512(p);
    even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
    odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xFFFF0000u))));
  }
  static void load_i8_quad(const int8_t* p, reg out[4]) {
    const __m512i v = _mm512_loadu_si512(p), top = _mm512_set1_epi32(int(0xFF000000u));
    out[0] = _mm512_cvtepi32_ps(_mm512_slli_epi32(v, 24));
    out[1] = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_slli_epi32(v, 16), top));
    out[2] = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_slli_epi32(v, 8), top));
    out[3] = _mm512_cvtepi32_ps(_mm512_and_si512(v, top));
  }
  static float sum(reg a) { return _mm512_reduce_add_ps(a); }
  static reg set1(float v) { return _mm512_set1_ps(v); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  // The first n (< W) lanes: outer_tile's last columns.
  static reg load_first(const float* p, int n) { return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p); }
  static void store_first(float* p, reg v, int n) { _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), v); }
};

}  // namespace

namespace reglage::kernels::detail {

void gemm_rows_avx512(const float* x, int64_t M, int64_t K, const void* w, int format, const float* scale,
                      float* y, int64_t N, int64_t n0, int64_t n1) {
  gemm_rows_any<V512>(x, M, K, w, format, scale, y, N, n0, n1);
}

void outer_rows_avx512(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                       int64_t ldc, int64_t K, int64_t N, int64_t m0, int64_t m1, float alpha, bool accumulate) {
  outer_rows<V512>(a, a_row, a_col, b, ldb, c, ldc, K, N, m0, m1, alpha, accumulate);
}

}  // namespace reglage::kernels::detail
