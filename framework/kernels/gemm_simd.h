// The small-product kernel, written once over a vector traits type V and included by one translation unit
// per instruction set (gemm_avx512.cpp, gemm_avx2.cpp, and the scalar path in weight_only.cpp), each compiled
// with its own -m flags. Everything here has internal linkage (the includer wraps it in an anonymous
// namespace), so code built for one instruction set is never linked into another's callers.
// Includers include <cstdint>, <cstring>, <type_traits> and <vector> first (the standard headers cannot open inside a namespace).
//
// y[m, n] = scale[n] * sum_k x[m, k] * widen(w[n, k]) for rows n in [n0, n1): R weight rows and MB input
// rows at a time, R x MB vector accumulators, each weight vector widened once and used MB times.
// V provides: reg, W (lanes), R, MB, R1 (weight rows at a time when M = 1), R_I8 and MB_I8 (R and MB for int8
// weights, whose widening takes registers too), zero(), load_x(const float*), load_w(const float* | const uint16_t* |
// const int8_t*), fma(a, b, acc) = a * b + acc, sum(reg); kPackedNarrow, and when it is set the packed loads of
// narrow_rows_m1: load_bf16_pair(const uint16_t* p, reg& even, reg& odd) widens p[0, 2W) into its even and odd
// elements, and load_i8_quad(const int8_t* p, reg out[4]) widens p[0, 4W) into out[j][i] = 2^24 * p[4 i + j].
#pragma once
#include <cstdint>
#include <cstring>

inline float widen_one(float v) { return v; }
inline float widen_one(int8_t v) { return float(v); }
inline float widen_one(uint16_t v) {
  const uint32_t bits = uint32_t(v) << 16;  // bfloat16 is the top half of a float32
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Into the caches with the T2 hint (locality 1). On an Intel Xeon (Emerald Rapids VM) the non-temporal hint
// (prefetchnta, used before) held a decode step's weight stream to 7 GB/s on 2 cores, against 17 GB/s with T2
// or T0 or with no software prefetch at all (float32 rows; bfloat16 rows 8.6 against 21-23 GB/s).
template <class WT>
inline void prefetch_ahead(const WT* p) {
  __builtin_prefetch(p, 0, 1);
}

// R weight rows (w points at the first, rows K apart) against MB input rows (x, rows K apart):
// out[r * MB + j] = dot(w[r], x[j]).
template <class V, class WT, int R, int MB>
inline void micro_kernel(const float* x, int64_t K, const WT* w, float* out) {
  typename V::reg acc[R][MB];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int j = 0; j < MB; ++j) acc[r][j] = V::zero();
  // Elements of WT per 64-byte cache line: a multiple of V::W, so k meets every line start once.
  constexpr int64_t kLineElems = 64 / int64_t(sizeof(WT)) > V::W ? 64 / int64_t(sizeof(WT)) : V::W;
  int64_t k = 0;
  for (; k + V::W <= K; k += V::W) {
    typename V::reg wv[R];
    // The next row block's bytes at this offset, one prefetch per cache line (an int8 row has 8 vectors of
    // AVX2 per line): decode reads each weight once, from memory, and the hardware prefetcher alone left a
    // single core at a third of its read bandwidth.
    const bool line_start = k % kLineElems == 0;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      if (line_start) prefetch_ahead(w + (R + r) * K + k);
      wv[r] = V::load_w(w + r * K + k);
    }
#pragma GCC unroll 8
    for (int j = 0; j < MB; ++j) {
      const typename V::reg xv = V::load_x(x + j * K + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][j] = V::fma(wv[r], xv, acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < MB; ++j) {
      float s = V::sum(acc[r][j]);
      for (int64_t kk = k; kk < K; ++kk) s += widen_one(w[r * K + kk]) * x[j * K + kk];
      out[r * MB + j] = s;
    }
}

// Input rows per micro-kernel call for weights of type WT.
template <class V, class WT>
constexpr int input_rows() {
  return sizeof(WT) == 1 ? V::MB_I8 : V::MB;
}

template <class V, class WT, int R>
inline void row_block(const float* x, int64_t M, int64_t K, const WT* w, const float* scale, float* y, int64_t N,
                      int64_t n) {
  constexpr int MB = input_rows<V, WT>();
  float out[R * MB];
  for (int64_t m = 0; m < M; m += MB) {
    const int mb = M - m < MB ? int(M - m) : MB;
    const float* xm = x + m * K;
    switch (mb) {  // MB is at most 4
      case 4: micro_kernel<V, WT, R, (MB >= 4 ? 4 : 1)>(xm, K, w + n * K, out); break;
      case 3: micro_kernel<V, WT, R, (MB >= 3 ? 3 : 1)>(xm, K, w + n * K, out); break;
      case 2: micro_kernel<V, WT, R, (MB >= 2 ? 2 : 1)>(xm, K, w + n * K, out); break;
      default: micro_kernel<V, WT, R, 1>(xm, K, w + n * K, out); break;
    }
    for (int r = 0; r < R; ++r) {
      const float s = scale ? scale[n + r] : 1.0f;
      for (int j = 0; j < mb; ++j) y[(m + j) * N + n + r] = out[r * mb + j] * s;
    }
  }
}

// The decode step of one sequence (M = 1) against a narrow weight (bfloat16, int8). Where V::kPackedNarrow is set
// it reads whole vectors of packed weights and widens them without lane-crossing shuffles: one register of 2W
// bfloat16 gives W even elements (shifted into the top half) and W odd ones (the top half masked), one register
// of 4W int8 gives byte j of each lane for j = 0..3 (moved into the top byte and converted, so as 2^24 times its
// value); the input row is reordered once per call to match (permute_for_packed). On an AVX-512 EPYC, widening
// element by element (vpmovzxwd / vpmovsxbd and a shift or a convert per W elements) held a core at 2 cycles per
// 16 weights, and the packed loads read 1.2-1.5x faster in the same runs; on the AVX2 path they were no faster
// on that machine, so V256 widens element by element (P = 1 below).
// Weights per lane of one load: sizeof(float) / sizeof(WT) when packed, else 1.
template <class V, class WT>
constexpr int64_t narrow_parts() {
  return V::kPackedNarrow ? int64_t(sizeof(float) / sizeof(WT)) : 1;
}

// xp (K) = x reordered per packed block of P * W weights: block element p * W + i holds x[i * P + p]. The tail
// past the last whole block stays in place.
template <class V, class WT>
inline void permute_for_packed(const float* x, int64_t K, float* xp) {
  constexpr int64_t P = narrow_parts<V, WT>(), B = P * V::W;
  int64_t k = 0;
  for (; k + B <= K; k += B)
    for (int64_t p = 0; p < P; ++p)
      for (int64_t i = 0; i < V::W; ++i) xp[k + p * V::W + i] = x[k + i * P + p];
  for (; k < K; ++k) xp[k] = x[k];
}

// 2^24: the factor the packed int8 widening leaves on each weight (its byte moved to the top of the lane).
constexpr float kPackedI8Factor = 16777216.0f;

// acc[p] += part p of the block of P * W weights at w times xp's part p.
template <class V, int64_t P>
inline void narrow_fma(const uint16_t* w, const float* xp, typename V::reg* acc) {
  if constexpr (P == 1) {
    acc[0] = V::fma(V::load_w(w), V::load_x(xp), acc[0]);
  } else {
    typename V::reg even, odd;
    V::load_bf16_pair(w, even, odd);
    acc[0] = V::fma(even, V::load_x(xp), acc[0]);
    acc[1] = V::fma(odd, V::load_x(xp + V::W), acc[1]);
  }
}
template <class V, int64_t P>
inline void narrow_fma(const int8_t* w, const float* xp, typename V::reg* acc) {
  if constexpr (P == 1) {
    acc[0] = V::fma(V::load_w(w), V::load_x(xp), acc[0]);
  } else {
    typename V::reg b[4];
    V::load_i8_quad(w, b);
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) acc[p] = V::fma(b[p], V::load_x(xp + p * V::W), acc[p]);
  }
}

// dot(w, x) over K for one narrow weight row (x permuted when packed): one row at a time, one 64-byte line
// per step with the line `ahead` elements further on prefetched, P accumulators (two when P = 1, alternating
// blocks). Reading several rows side by side kept a core at 60% (int8) and 80% (bfloat16) of its read
// bandwidth on an AVX2 EPYC, widening with 8-17 registers live, and ran at 55-75% of one row's speed on an
// AVX-512 EPYC; one row reached 85-90%.
template <class V, class WT>
inline float narrow_row_dot(const float* xp, int64_t K, const WT* w, int64_t ahead) {
  constexpr int64_t P = narrow_parts<V, WT>(), B = P * V::W, A = P > 1 ? P : 2;
  constexpr int64_t kLine = 64 / int64_t(sizeof(WT)) > A * V::W ? 64 / int64_t(sizeof(WT)) : A * V::W;
  typename V::reg acc[A];
  for (auto& a : acc) a = V::zero();
  int64_t k = 0;
  for (; k + kLine <= K; k += kLine) {
    prefetch_ahead(w + ahead + k);
#pragma GCC unroll 8
    for (int64_t u = 0; u < kLine; u += B) narrow_fma<V, P>(w + k + u, xp + k + u, acc + (P == 1 ? (u / B) % 2 : 0));
  }
  for (; k + B <= K; k += B) narrow_fma<V, P>(w + k, xp + k, acc);
  float s = 0;
  for (int64_t a = 0; a < A; ++a) s += V::sum(acc[a]);
  if (P == 4) s /= kPackedI8Factor;
  for (; k < K; ++k) s += widen_one(w[k]) * xp[k];
  return s;
}

// Rows [n0, n1) of y (1, N) = x (1, K) W^T for a narrow W: x permuted once when packed, then row by row,
// prefetching 4 rows ahead.
template <class V, class WT>
inline void narrow_rows_m1(const float* x, int64_t K, const WT* w, const float* scale, float* y, int64_t n0,
                           int64_t n1) {
  const float* xp = x;
  if constexpr (narrow_parts<V, WT>() > 1) {
    thread_local std::vector<float> permuted;
    if (int64_t(permuted.size()) < K) permuted.resize(size_t(K));
    permute_for_packed<V, WT>(x, K, permuted.data());
    xp = permuted.data();
  }
  const int64_t ahead = 4 * K;
  for (int64_t n = n0; n < n1; ++n) {
    const float s = narrow_row_dot<V>(xp, K, w + n * K, ahead);
    y[n] = scale ? s * scale[n] : s;
  }
}

// Rows [n0, n1) of y (M, N) = x (M, K) W^T, W (N, K) of element type WT.
template <class V, class WT>
inline void gemm_rows(const float* x, int64_t M, int64_t K, const WT* w, const float* scale, float* y, int64_t N,
                      int64_t n0, int64_t n1) {
  if constexpr (sizeof(WT) < sizeof(float))
    if (M == 1) return narrow_rows_m1<V>(x, K, w, scale, y, n0, n1);
  int64_t n = n0;
  // One input row (a decode step of one sequence): more weight rows at once, more loads in flight.
  constexpr int R = sizeof(WT) == 1 ? V::R_I8 : V::R;
  if (M == 1)
    for (; n + V::R1 <= n1; n += V::R1) row_block<V, WT, V::R1>(x, M, K, w, scale, y, N, n);
  for (; n + R <= n1; n += R) row_block<V, WT, R>(x, M, K, w, scale, y, N, n);
  for (; n < n1; ++n) row_block<V, WT, 1>(x, M, K, w, scale, y, N, n);
}

// Element formats of the weight, as the entry points take them.
enum GemmFormat : int { kGemmF32 = 0, kGemmBF16 = 1, kGemmI8 = 2 };

template <class V>
inline void gemm_rows_any(const float* x, int64_t M, int64_t K, const void* w, int format, const float* scale,
                          float* y, int64_t N, int64_t n0, int64_t n1) {
  switch (format) {
    case kGemmBF16: gemm_rows<V>(x, M, K, static_cast<const uint16_t*>(w), scale, y, N, n0, n1); break;
    case kGemmI8: gemm_rows<V>(x, M, K, static_cast<const int8_t*>(w), scale, y, N, n0, n1); break;
    default: gemm_rows<V>(x, M, K, static_cast<const float*>(w), scale, y, N, n0, n1); break;
  }
}

// The outer-product form, for products whose inner dimension is LoRA's rank (t B^T, g B A) or whose left
// operand is a transpose read through strides (the adapters' gradients t^T g, (g B)^T x). An MR x NV tile of
// C (MR rows, NV vectors of columns) stays in registers while k runs: per k, NV loads of B's row, MR
// broadcasts of A, MR x NV fused multiply-adds. Each element sums k in order and is then scaled by alpha, so
// its bits do not depend on how the rows or columns are split among threads.
// A long k (the gradients' tokens) runs in chunks, each tile's unscaled sums kept between chunks in `part`
// (MR rows, ldp apart): `from_part` starts from them instead of zero, `to_part` stores them there instead of
// finishing into C. A float32 stored and loaded again is the same float32, so the chunks change no bit.
// V also provides: MR_B, NV_B (the tile), set1(float), mul, add, store(float*, reg), and load_first(const float*,
// n), store_first(float*, reg, n) for the first n lanes.
// kTail (with NV = 1 and 0 < cols < W) makes the tile the last cols columns of C: B and C read and written
// through masks, the sums kept whole-vector in `part`.
template <class V, int MR, int NV, bool kTail = false>
inline void outer_tile(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                       int64_t ldc, int64_t K, float alpha, bool accumulate, float* part = nullptr, int64_t ldp = 0,
                       bool from_part = false, bool to_part = false, int cols = 0) {
  typename V::reg acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[i][j] = from_part ? V::load_x(part + i * ldp + j * V::W) : V::zero();
  for (int64_t k = 0; k < K; ++k) {
    typename V::reg bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      if constexpr (kTail)
        bv[j] = V::load_first(b + k * ldb, cols);
      else
        bv[j] = V::load_x(b + k * ldb + j * V::W);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const typename V::reg av = V::set1(a[i * a_row + k * a_col]);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] = V::fma(av, bv[j], acc[i][j]);
    }
  }
  if (to_part) {
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) V::store(part + i * ldp + j * V::W, acc[i][j]);
    return;
  }
  const typename V::reg scale = V::set1(alpha);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      float* p = c + i * ldc + j * V::W;
      typename V::reg v = V::mul(acc[i][j], scale);
      if constexpr (kTail) {
        if (accumulate) v = V::add(v, V::load_first(p, cols));
        V::store_first(p, v, cols);
      } else {
        if (accumulate) v = V::add(v, V::load_x(p));
        V::store(p, v);
      }
    }
}

// Rows of k per chunk (32 KiB of a block of NV_B vectors). Read whole (2,048 tokens) by each of the 4 row tiles
// of an adapter's gradient, a block of 64 columns took 512 KiB of L2, and rows 6 KiB apart (1,536 features)
// fall into an eighth of L2's sets: t^T g ran at 81 GFLOP/s there against 186 at 576 features (Intel Xeon VM,
// 2 threads, hot caches).
template <class V>
constexpr int64_t outer_k_chunk() {
  return 32768 / (V::NV_B * V::W * int64_t(sizeof(float)));
}

// Rows [m0, m1) and columns [0, N) of C = alpha A (., K) B (K, N) (+ C when accumulate): A[m, k] at
// a[m * a_row + k * a_col], B and C row-major with row strides ldb and ldc. Column blocks of NV vectors, then
// single vectors, then the last columns as one masked vector (column by column in scalar code, attention's
// q k^T over 100 keys ran at half OpenBLAS's speed); within a block, MR rows at a time and the rest one by one. B's block
// stays in L1 for LoRA's rank; a K of thousands of tokens runs in chunks of k, each over all the blocks, the
// sums kept between chunks. (Rows outermost, each along all its columns, ran no faster in a SmolLM2 step.)
template <class V>
inline void outer_rows(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                       int64_t ldc, int64_t K, int64_t N, int64_t m0, int64_t m1, float alpha, bool accumulate) {
  constexpr int MR = V::MR_B, NV = V::NV_B;
  constexpr int64_t KC = outer_k_chunk<V>();
  const bool chunked = K > KC;
  const int64_t ldp = (N + V::W - 1) / V::W * V::W;  // whole vectors over the columns
  thread_local std::vector<float> part;               // (m1 - m0, ldp): the unscaled sums between chunks
  if (chunked && int64_t(part.size()) < (m1 - m0) * ldp) part.resize(size_t((m1 - m0) * ldp));
  for (int64_t k0 = 0; k0 == 0 || k0 < K; k0 += KC) {  // once at least: K = 0 writes alpha 0 (+ C)
    const int64_t kc = K - k0 < KC ? K - k0 : KC;
    const bool from = k0 > 0, to = k0 + kc < K;
    const float* ak = a + k0 * a_col;
    // Columns [n, n + NV W) of the chunk (the last `cols` columns when kTail), down the rows.
    auto block = [&](auto nv, auto tail, int64_t n, int cols) {
      constexpr int kNV = decltype(nv)::value;
      constexpr bool kTail = decltype(tail)::value;
      const float* bk = b + k0 * ldb + n;
      auto pm = [&](int64_t m) { return chunked ? part.data() + (m - m0) * ldp + n : nullptr; };
      int64_t m = m0;
      for (; m + MR <= m1; m += MR)
        outer_tile<V, MR, kNV, kTail>(ak + m * a_row, a_row, a_col, bk, ldb, c + m * ldc + n, ldc, kc, alpha, accumulate,
                               pm(m), ldp, from, to, cols);
      for (; m < m1; ++m)
        outer_tile<V, 1, kNV, kTail>(ak + m * a_row, a_row, a_col, bk, ldb, c + m * ldc + n, ldc, kc, alpha, accumulate,
                              pm(m), ldp, from, to, cols);
    };
    int64_t n = 0;
    using Whole = std::false_type;
    for (; n + NV * V::W <= N; n += NV * V::W) block(std::integral_constant<int, NV>{}, Whole{}, n, 0);
    for (; n + V::W <= N; n += V::W) block(std::integral_constant<int, 1>{}, Whole{}, n, 0);
    if (n < N) block(std::integral_constant<int, 1>{}, std::true_type{}, n, int(N - n));
  }
}
