// LoRA's narrow products in bfloat16 on AVX-512 BF16 (vdpbf16ps: the sum of two bfloat16 products added into a
// float32 lane, twice the float32 FMA's arithmetic per instruction). Compiled with -mavx512bf16 (CMakeLists.txt)
// and without the precompiled header; called only when the CPU reports avx512_bf16 (low_rank.cpp checks).
//
// Operands come as pairs of bfloat16 along the summed index k, packed in 32-bit words (low half: the even k):
// the form vdpbf16ps multiplies. Each output element sums its pairs in order of k, whatever the thread split.
#include <immintrin.h>

#include <cstdint>

#include "framework/kernels/gemm_paths.h"

namespace reglage::kernels::detail {

namespace {

constexpr int kLanes = 16;  // float32 lanes of a 512-bit register

__m512 dot_pairs(__m512 acc, uint32_t a_pair, __m512i b_pairs) {
  // The broadcast as the second source, so that the compiler folds it into the instruction ({1to16}).
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh>(b_pairs),
                          reinterpret_cast<__m512bh>(_mm512_set1_epi32(int(a_pair))));
}

// 16 columns of two rows of a matrix (the lanes of `mask`; others zero) as 16 pairs (row0[j], row1[j]).
__m512i column_pairs(const uint16_t* row0, const uint16_t* row1, __mmask16 mask, __m512i interleave) {
  const __m512i lo = _mm512_zextsi256_si512(_mm256_maskz_loadu_epi16(mask, row0));
  const __m512i hi = _mm512_zextsi256_si512(_mm256_maskz_loadu_epi16(mask, row1));
  return _mm512_permutex2var_epi16(lo, interleave, hi);
}
// The same for a last row of odd count, paired with zeros.
__m512i column_pairs(const uint16_t* row0, __mmask16 mask, __m512i interleave) {
  const __m512i lo = _mm512_zextsi256_si512(_mm256_maskz_loadu_epi16(mask, row0));
  return _mm512_permutex2var_epi16(lo, interleave, _mm512_setzero_si512());
}

// The vpermt2w index that interleaves two rows: word 2j of the result is row0's word j, word 2j + 1 row1's
// (index 32 + j).
__m512i interleave_index() {
  alignas(64) uint16_t idx[32];
  for (int j = 0; j < kLanes; ++j) {
    idx[2 * j] = uint16_t(j);
    idx[2 * j + 1] = uint16_t(32 + j);
  }
  return _mm512_load_si512(idx);
}

}  // namespace

void pack_pairs_bf16_avx512(const uint16_t* a, int64_t lda, int64_t K, int64_t r, uint32_t* out, int64_t rp) {
  const __m512i interleave = interleave_index();
  for (int64_t j = 0; j < (K + 1) / 2; ++j)
    for (int64_t m = 0; m < rp; m += kLanes) {
      const int64_t width = m < r ? (r - m < kLanes ? r - m : kLanes) : 0;  // lanes past r are zeros
      const __mmask16 mask = __mmask16((1u << width) - 1u);
      const uint16_t* row0 = a + 2 * j * lda + m;
      const __m512i pairs = 2 * j + 1 < K ? column_pairs(row0, row0 + lda, mask, interleave)
                                          : column_pairs(row0, mask, interleave);
      _mm512_storeu_si512(out + j * rp + m, pairs);
    }
}

void pair_reduce_bf16_avx512(const uint32_t* a_pairs, int64_t rp, int64_t r, const uint16_t* b, int64_t ldb,
                             int64_t K, float* c, int64_t ldc, float alpha, int64_t n0, int64_t n1) {
  const __m512i interleave = interleave_index();
  const int64_t pairs = K / 2;
  for (int64_t n = n0; n < n1; n += kLanes) {
    const int width = int(n1 - n < kLanes ? n1 - n : kLanes);
    const __mmask16 mask = __mmask16((1u << width) - 1u);
    for (int64_t m0 = 0; m0 < r; m0 += kLanes) {  // a 16 x 16 tile of c: rows m0.., columns n..
      __m512 acc[kLanes];
#pragma GCC unroll 16
      for (auto& v : acc) v = _mm512_setzero_ps();
      for (int64_t j = 0; j < pairs; ++j) {
        const __m512i bp = column_pairs(b + 2 * j * ldb + n, b + (2 * j + 1) * ldb + n, mask, interleave);
        const uint32_t* ap = a_pairs + j * rp + m0;
#pragma GCC unroll 16
        for (int m = 0; m < kLanes; ++m) acc[m] = dot_pairs(acc[m], ap[m], bp);
      }
      if (K % 2) {  // the last k pairs with zero
        const __m512i bp = column_pairs(b + (K - 1) * ldb + n, mask, interleave);
        const uint32_t* ap = a_pairs + pairs * rp + m0;
#pragma GCC unroll 16
        for (int m = 0; m < kLanes; ++m) acc[m] = dot_pairs(acc[m], ap[m], bp);
      }
      const __m512 s = _mm512_set1_ps(alpha);
#pragma GCC unroll 16
      for (int m = 0; m < kLanes; ++m)
        if (m0 + m < r) _mm512_mask_storeu_ps(c + (m0 + m) * ldc + n, mask, _mm512_mul_ps(acc[m], s));
    }
  }
}

namespace {

// Rows [i0, i0 + R) of t against lanes [m0, m0 + 16) of the packed factor.
template <int R>
void pair_rows_tile(const uint16_t* x, int64_t ldx, const uint32_t* f_pairs, int64_t rp, int64_t r, int64_t K,
                    float* t, int64_t ldt, int64_t i0, int64_t m0) {
  __m512 acc[R];
#pragma GCC unroll 16
  for (auto& v : acc) v = _mm512_setzero_ps();
  const int64_t pairs = K / 2;
  for (int64_t j = 0; j < pairs; ++j) {
    const __m512i fp = _mm512_loadu_si512(f_pairs + j * rp + m0);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      uint32_t xp;
      __builtin_memcpy(&xp, x + (i0 + i) * ldx + 2 * j, sizeof xp);
      acc[i] = dot_pairs(acc[i], xp, fp);
    }
  }
  if (K % 2) {
    const __m512i fp = _mm512_loadu_si512(f_pairs + pairs * rp + m0);
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) acc[i] = dot_pairs(acc[i], x[(i0 + i) * ldx + K - 1], fp);
  }
  const int width = int(r - m0 < kLanes ? r - m0 : kLanes);
  const __mmask16 mask = __mmask16((1u << width) - 1u);
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) _mm512_mask_storeu_ps(t + (i0 + i) * ldt + m0, mask, acc[i]);
}

}  // namespace

void pair_rows_bf16_avx512(const uint16_t* x, int64_t ldx, const uint32_t* f_pairs, int64_t rp, int64_t r, int64_t K,
                           float* t, int64_t ldt, int64_t i0, int64_t i1) {
  constexpr int kRows = 8;  // 8 accumulators and 8 row pointers: the tile that ran fastest (8, 12, 16 tried)
  for (int64_t m0 = 0; m0 < r; m0 += kLanes) {
    int64_t i = i0;
    for (; i + kRows <= i1; i += kRows) pair_rows_tile<kRows>(x, ldx, f_pairs, rp, r, K, t, ldt, i, m0);
    for (; i < i1; ++i) pair_rows_tile<1>(x, ldx, f_pairs, rp, r, K, t, ldt, i, m0);
  }
}

}  // namespace reglage::kernels::detail
