// The fused elementwise kernels (SwiGLU, RMSNorm, rotary embedding, attention's masked softmax, the loss's row
// softmax), written once as plain loops and included by one
// translation unit per instruction set (elementwise_avx512.cpp, elementwise_avx2.cpp, and the scalar path in
// fused_elementwise.cpp), each compiled with its own -m flags and -O3 so that GCC vectorises the loops. Everything
// here has internal linkage (the includer wraps it in an anonymous namespace).
// Includers include <cmath>, <cstdint> and <cstring> first.
//
// Values are float32 or bfloat16 (stored as uint16_t); arithmetic is float32 throughout, and a bfloat16 result
// is rounded to nearest even once, as LibTorch rounds.
#pragma once

inline float bits_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
inline uint32_t float_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

inline float load_value(const float* p, int64_t i) { return p[i]; }
inline float load_value(const uint16_t* p, int64_t i) { return bits_float(uint32_t(p[i]) << 16); }

// float32 -> bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN.
inline uint16_t bf16_bits(float v) {
  const uint32_t b = float_bits(v);
  const uint32_t rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
  return uint16_t(v != v ? 0x7FC0u : rounded);
}
inline void store_value(float* p, int64_t i, float v) { p[i] = v; }
inline void store_value(uint16_t* p, int64_t i, float v) { p[i] = bf16_bits(v); }

// v as the storage type T holds it: unchanged for float32, rounded to bfloat16 for bfloat16.
inline float as_stored(const float*, float v) { return v; }
inline float as_stored(const uint16_t*, float v) { return bits_float(uint32_t(bf16_bits(v)) << 16); }

// e^x for float32, branch-free so that it vectorises: x = n ln2 + r with |r| <= ln2 / 2, e^r by Cephes' degree-6
// polynomial (about 1 ulp), 2^n put into the exponent bits. Below -87.3 the result is 0 (e^x is subnormal there),
// above 88.7 it is e^88.7 (finite; callers only pass non-positive x or feed 1 / (1 + e^x)), NaN stays NaN.
// Rounding to the nearest n adds and subtracts 1.5 * 2^23, whose bits then hold n; the clamps are comparisons
// (std::fmin/fmax do not vectorise).
inline float exp_f32(float x) {
  constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23
  const float c = x < -87.3f ? -87.3f : (x > 88.7f ? 88.7f : x);
  const float t = c * 1.44269504088896341f + kShifter;
  const float n = t - kShifter;
  float r = c - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = bits_float((float_bits(t) - float_bits(kShifter) + 127u) << 23);
  const float e = x < -87.3f ? 0.0f : p * scale;
  return x != x ? x : e;
}

inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

// sum over i < n of f(i) in an order that depends on n alone: 16 running sums over i mod 16 (one or two
// vectors), combined pairwise, then the tail. A plain vectorised reduction would start wherever the data's
// address first aligns, so the same row summed at another address could round differently, and a resumed run
// could depart from an uninterrupted one. f may store (the softmax keeps its exponentials), but GCC 12 ran such
// a loop one lane at a time when f also read a mask byte or a bfloat16 value: those kernels store first, then sum.
template <class F>
inline float fixed_order_sum(int64_t n, F f) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
#pragma GCC unroll 16
    for (int j = 0; j < kLanes; ++j) acc[j] += f(i + j);
  for (int w = kLanes / 2; w > 0; w /= 2)
#pragma GCC unroll 8
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  float tail = 0.0f;
  for (; i < n; ++i) tail += f(i);
  return acc[0] + tail;
}

// h = silu(g) * u over n elements.
template <class T>
void swiglu_forward_kernel(const T* g, const T* u, T* h, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float gv = load_value(g, i);
    store_value(h, i, gv * sigmoid_f32(gv) * load_value(u, i));
  }
}

// With s = sigmoid(g): du = dh g s, dg = dh u s (1 + g (1 - s)).
template <class T>
void swiglu_backward_kernel(const T* g, const T* u, const T* dh, T* dg, T* du, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float gv = load_value(g, i), uv = load_value(u, i), d = load_value(dh, i);
    const float s = sigmoid_f32(gv);
    store_value(du, i, d * gv * s);
    store_value(dg, i, d * uv * s * (1.0f + gv * (1.0f - s)));
  }
}

// Rows [r0, r1) of x (rows, D): inv[r] = 1 / sqrt(mean(x[r]^2) + eps); y = w * stored(x * inv), as Hugging Face
// (the normalised value in the storage type before the weight multiplies it).
template <class T>
void rms_norm_forward_kernel(const T* x, const T* w, float eps, int64_t D, int64_t r0, int64_t r1, T* y,
                             float* inv) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * D;
    T* yr = y + r * D;
    const float ss = fixed_order_sum(D, [&](int64_t i) { return load_value(xr, i) * load_value(xr, i); });
    const float k = 1.0f / std::sqrt(ss / float(D) + eps);
    inv[r] = k;
#pragma omp simd
    for (int64_t i = 0; i < D; ++i) store_value(yr, i, load_value(w, i) * as_stored(x, load_value(xr, i) * k));
  }
}

// The input gradient of rows [r0, r1): with gn = dy w and k = inv[r], dx = k gn - x k^3 mean(gn x).
template <class T>
void rms_norm_backward_kernel(const T* x, const T* w, const float* inv, const T* dy, int64_t D, int64_t r0,
                              int64_t r1, T* dx) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * D;
    const T* dyr = dy + r * D;
    T* dxr = dx + r * D;
    const float dot =
        fixed_order_sum(D, [&](int64_t i) { return load_value(dyr, i) * load_value(w, i) * load_value(xr, i); });
    const float k = inv[r], c = k * k * k * dot / float(D);
#pragma omp simd
    for (int64_t i = 0; i < D; ++i)
      store_value(dxr, i, k * load_value(dyr, i) * load_value(w, i) - c * load_value(xr, i));
  }
}

// Rotary embedding of rows [r0, r1) of x (rows, heads, Dh) with tables cos, sin (rows, Dh), float32, whose sin
// carries rotate_half's sign in its first half: y[i] = x[i] cos[i] + x[partner(i)] sin[i], partner(i) = (i + Dh/2)
// mod Dh. The map is its own partner's, so backward (kBackward, x = dy) is the same loop with sin's halves
// swapped: dx[i] = dy[i] cos[i] + dy[partner(i)] sin[partner(i)].
template <class T, bool kBackward>
void rotary_kernel(const T* x, const float* cos, const float* sin, int64_t heads, int64_t Dh, int64_t r0, int64_t r1,
                   T* y) {
  const int64_t half = Dh / 2;
  for (int64_t r = r0; r < r1; ++r) {
    const float* c = cos + r * Dh;
    const float* s_lo = sin + r * Dh + (kBackward ? half : 0);  // multiplies the partner in the first half
    const float* s_hi = sin + r * Dh + (kBackward ? 0 : half);  // and in the second
    for (int64_t h = 0; h < heads; ++h) {
      const T* xr = x + (r * heads + h) * Dh;
      T* yr = y + (r * heads + h) * Dh;
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const float a = load_value(xr, i), b = load_value(xr, i + half);
        store_value(yr, i, a * c[i] + b * s_lo[i]);
        store_value(yr, i + half, b * c[i + half] + a * s_hi[i]);
      }
    }
  }
}

// Attention's softmax over rows [r0, r1) of scores (rows, S), rows ordered (batch, heads, T) with `heads` rows
// of T per batch entry; blocked (batches * T, S) as bytes (1 = blocked) holds the mask row of each (batch, t).
// Blocked entries get probability exactly 0; a row with nothing to attend to gets 1/S everywhere (finite,
// ignored values, as a large negative score added to every entry gives). e (S floats) is scratch.
template <class T>
void masked_softmax_forward_kernel(const T* scores, const uint8_t* blocked, int64_t S, int64_t Tq, int64_t heads,
                                   int64_t r0, int64_t r1, T* probs, float* e) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* sr = scores + r * S;
    const uint8_t* br = blocked + ((r / (heads * Tq)) * Tq + r % Tq) * S;
    T* pr = probs + r * S;
    // Keys after the last one this query sees (causality's, or padding's) are blocked: the loops stop at the
    // first multiple of 16 past it. fixed_order_sum puts element i in lane i mod 16 either way and the
    // skipped exponentials are zeros, so the sum and every probability keep their bits; a causal row does
    // about half the work.
    int64_t seen = S;
    for (uint64_t word; seen >= 8; seen -= 8) {  // eight mask bytes (0 or 1) at a time while all are blocked
      std::memcpy(&word, br + seen - 8, sizeof word);
      if (word != 0x0101010101010101ull) break;
    }
    while (seen > 0 && br[seen - 1]) --seen;
    const int64_t whole = (seen + 15) / 16 * 16, n = whole < S ? whole : S;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t i = 0; i < n; ++i) {
      const float v = br[i] ? -INFINITY : load_value(sr, i);
      mx = v > mx ? v : mx;
    }
    if (mx == -INFINITY) {  // nothing to attend to
      for (int64_t i = 0; i < S; ++i) store_value(pr, i, 1.0f / float(S));
      continue;
    }
    // The exponentials first, then their sum: GCC vectorises neither when one loop both stores and sums them
    // (the fused form ran 5x slower, one lane at a time); the same values added in the same order either way.
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) e[i] = br[i] ? 0.0f : exp_f32(load_value(sr, i) - mx);
    const float sum = fixed_order_sum(n, [&](int64_t i) { return e[i]; });
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) store_value(pr, i, e[i] * inv);
    for (int64_t i = n; i < S; ++i) store_value(pr, i, 0.0f);
  }
}

// Its backward over rows [r0, r1): ds = p (dp - sum(p dp)).
template <class T>
void softmax_backward_kernel(const T* probs, const T* dprobs, int64_t S, int64_t r0, int64_t r1, T* dscores) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* pr = probs + r * S;
    const T* dr = dprobs + r * S;
    T* out = dscores + r * S;
    const float dot = fixed_order_sum(S, [&](int64_t i) { return load_value(pr, i) * load_value(dr, i); });
#pragma omp simd
    for (int64_t i = 0; i < S; ++i) store_value(out, i, load_value(pr, i) * (load_value(dr, i) - dot));
  }
}

// Rows [r0, r1) of z (rows, V), float32, in place: lse[r] = logsumexp(z[r]) and z[r] becomes -softmax(z[r]).
// Each row is read three times while it sits in cache (max, exp and sum, scale) instead of once per operator.
inline void neg_softmax_rows_kernel(float* z, int64_t V, int64_t r0, int64_t r1, float* lse) {
  for (int64_t r = r0; r < r1; ++r) {
    float* zr = z + r * V;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t i = 0; i < V; ++i) mx = zr[i] > mx ? zr[i] : mx;
    const float sum = fixed_order_sum(V, [&](int64_t i) {
      const float e = exp_f32(zr[i] - mx);
      zr[i] = e;
      return e;
    });
    lse[r] = mx + std::log(sum);
    const float scale = -1.0f / sum;
#pragma omp simd
    for (int64_t i = 0; i < V; ++i) zr[i] *= scale;
  }
}

// Rows [r0, r1) of z (rows, V), bfloat16, in place: lse[r] = logsumexp(z[r]) and z[r] becomes
// onehot(target[r]) - softmax(z[r]), rounded to bfloat16 once. The same bits as the float32 path: the row
// widened (exactly), neg_softmax_rows_kernel, 1 added at the target, then rounded, with the widened row and its
// exponentials in scratch (V floats, in cache) instead of a float32 copy of the whole (rows, V) block in memory.
inline void onehot_minus_softmax_rows_bf16_kernel(uint16_t* z, const int64_t* target, int64_t V, int64_t r0,
                                                  int64_t r1, float* lse, float* scratch) {
  for (int64_t r = r0; r < r1; ++r) {
    uint16_t* zr = z + r * V;
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t i = 0; i < V; ++i) {
      const float v = load_value(zr, i);
      mx = v > mx ? v : mx;
    }
#pragma omp simd
    for (int64_t i = 0; i < V; ++i) scratch[i] = exp_f32(load_value(zr, i) - mx);  // then summed: see above
    const float sum = fixed_order_sum(V, [&](int64_t i) { return scratch[i]; });
    lse[r] = mx + std::log(sum);
    const float scale = -1.0f / sum;
#pragma omp simd
    for (int64_t i = 0; i < V; ++i) store_value(zr, i, scratch[i] * scale);
    float at_target = scratch[target[r]] * scale;
    asm("" : "+x"(at_target));  // rounded to float32 before the 1 is added, never one fused multiply-add
    store_value(zr, target[r], at_target + 1.0f);
  }
}

// out[i] = e^((z[i] - shift) / t) for i < n; returns their sum (fixed_order_sum). A sampler's weights.
inline float exp_shifted_kernel(const float* z, float shift, float t, int64_t n, float* out) {
  return fixed_order_sum(n, [&](int64_t i) {
    const float e = exp_f32((z[i] - shift) / t);
    out[i] = e;
    return e;
  });
}

// The table of one instruction set's entry points (bf16 = bfloat16 stored as uint16_t).
inline ElementwiseKernels make_elementwise_kernels() {
  ElementwiseKernels k;
  k.swiglu_forward_f32 = swiglu_forward_kernel<float>;
  k.swiglu_forward_bf16 = swiglu_forward_kernel<uint16_t>;
  k.swiglu_backward_f32 = swiglu_backward_kernel<float>;
  k.swiglu_backward_bf16 = swiglu_backward_kernel<uint16_t>;
  k.rms_norm_forward_f32 = rms_norm_forward_kernel<float>;
  k.rms_norm_forward_bf16 = rms_norm_forward_kernel<uint16_t>;
  k.rms_norm_backward_f32 = rms_norm_backward_kernel<float>;
  k.rms_norm_backward_bf16 = rms_norm_backward_kernel<uint16_t>;
  k.rotary_forward_f32 = rotary_kernel<float, false>;
  k.rotary_forward_bf16 = rotary_kernel<uint16_t, false>;
  k.rotary_backward_f32 = rotary_kernel<float, true>;
  k.rotary_backward_bf16 = rotary_kernel<uint16_t, true>;
  k.masked_softmax_forward_f32 = masked_softmax_forward_kernel<float>;
  k.masked_softmax_forward_bf16 = masked_softmax_forward_kernel<uint16_t>;
  k.softmax_backward_f32 = softmax_backward_kernel<float>;
  k.softmax_backward_bf16 = softmax_backward_kernel<uint16_t>;
  k.neg_softmax_rows = neg_softmax_rows_kernel;
  k.onehot_minus_softmax_rows_bf16 = onehot_minus_softmax_rows_bf16_kernel;
  k.exp_shifted = exp_shifted_kernel;
  return k;
}
