// Entry points of the fused elementwise kernels (elementwise_simd.h), one table per instruction set. Each
// table must only be used when the CPU has its instructions. bf16 = bfloat16 values stored as uint16_t.
#pragma once
#include <cstdint>

namespace reglage::kernels::detail {

struct ElementwiseKernels {
  void (*swiglu_forward_f32)(const float* g, const float* u, float* h, int64_t n);
  void (*swiglu_forward_bf16)(const uint16_t* g, const uint16_t* u, uint16_t* h, int64_t n);
  void (*swiglu_backward_f32)(const float* g, const float* u, const float* dh, float* dg, float* du, int64_t n);
  void (*swiglu_backward_bf16)(const uint16_t* g, const uint16_t* u, const uint16_t* dh, uint16_t* dg,
                               uint16_t* du, int64_t n);
  void (*rms_norm_forward_f32)(const float* x, const float* w, float eps, int64_t D, int64_t r0, int64_t r1,
                               float* y, float* inv);
  void (*rms_norm_forward_bf16)(const uint16_t* x, const uint16_t* w, float eps, int64_t D, int64_t r0,
                                int64_t r1, uint16_t* y, float* inv);
  void (*rms_norm_backward_f32)(const float* x, const float* w, const float* inv, const float* dy, int64_t D,
                                int64_t r0, int64_t r1, float* dx);
  void (*rms_norm_backward_bf16)(const uint16_t* x, const uint16_t* w, const float* inv, const uint16_t* dy,
                                 int64_t D, int64_t r0, int64_t r1, uint16_t* dx);
  void (*rotary_forward_f32)(const float* x, const float* cos, const float* sin, int64_t heads, int64_t Dh,
                             int64_t r0, int64_t r1, float* y);
  void (*rotary_forward_bf16)(const uint16_t* x, const float* cos, const float* sin, int64_t heads, int64_t Dh,
                              int64_t r0, int64_t r1, uint16_t* y);
  void (*rotary_backward_f32)(const float* dy, const float* cos, const float* sin, int64_t heads, int64_t Dh,
                              int64_t r0, int64_t r1, float* dx);
  void (*rotary_backward_bf16)(const uint16_t* dy, const float* cos, const float* sin, int64_t heads, int64_t Dh,
                               int64_t r0, int64_t r1, uint16_t* dx);
  void (*masked_softmax_forward_f32)(const float* scores, const uint8_t* blocked, int64_t S, int64_t T,
                                     int64_t heads, int64_t r0, int64_t r1, float* probs, float* scratch);
  void (*masked_softmax_forward_bf16)(const uint16_t* scores, const uint8_t* blocked, int64_t S, int64_t T,
                                      int64_t heads, int64_t r0, int64_t r1, uint16_t* probs, float* scratch);
  void (*softmax_backward_f32)(const float* probs, const float* dprobs, int64_t S, int64_t r0, int64_t r1,
                               float* dscores);
  void (*softmax_backward_bf16)(const uint16_t* probs, const uint16_t* dprobs, int64_t S, int64_t r0, int64_t r1,
                                uint16_t* dscores);
  void (*neg_softmax_rows)(float* z, int64_t V, int64_t r0, int64_t r1, float* lse);
  void (*onehot_minus_softmax_rows_bf16)(uint16_t* z, const int64_t* target, int64_t V, int64_t r0, int64_t r1,
                                         float* lse, float* scratch);
  float (*exp_shifted)(const float* z, float shift, float t, int64_t n, float* out);
};

const ElementwiseKernels& elementwise_avx512();
const ElementwiseKernels& elementwise_avx2();
const ElementwiseKernels& elementwise_scalar();

}  // namespace reglage::kernels::detail
