#include "framework/kernels/fused_elementwise.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "framework/core/error.h"
#include "framework/kernels/elementwise_paths.h"
#include "framework/kernels/weight_only.h"

namespace reglage::kernels {

namespace detail {
namespace {

#include "framework/kernels/elementwise_simd.h"

}  // namespace

const ElementwiseKernels& elementwise_scalar() {
  static const ElementwiseKernels table = make_elementwise_kernels();
  return table;
}

}  // namespace detail

namespace {

const detail::ElementwiseKernels& kernels_for(const std::string& path) {
#ifndef REGLAGE_SCALAR_KERNELS_ONLY
  if (path == "avx512") return detail::elementwise_avx512();
  if (path == "avx2") return detail::elementwise_avx2();
#endif
  (void)path;
  return detail::elementwise_scalar();
}

const detail::ElementwiseKernels& kernels() {
  static const detail::ElementwiseKernels& table = kernels_for(cpu_path());
  return table;
}

// Elements (or rows) per task of at::parallel_for: enough that a task outweighs its start.
constexpr int64_t kElementGrain = 16384;

template <class T>
T* ptr(const torch::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

bool is_bf16(const torch::Tensor& t) { return t.scalar_type() == torch::kBFloat16; }

// ---- SwiGLU -------------------------------------------------------------------------------------

struct SwigluFn : public torch::autograd::Function<SwigluFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& gate_in,
                               const torch::Tensor& up_in) {
    auto gate = gate_in.contiguous(), up = up_in.contiguous();
    auto h = torch::empty_like(gate);
    const auto& k = kernels();
    const bool bf16 = is_bf16(gate);
    at::parallel_for(0, gate.numel(), kElementGrain, [&](int64_t a, int64_t b) {
      if (bf16)
        k.swiglu_forward_bf16(ptr<uint16_t>(gate) + a, ptr<uint16_t>(up) + a, ptr<uint16_t>(h) + a, b - a);
      else
        k.swiglu_forward_f32(ptr<float>(gate) + a, ptr<float>(up) + a, ptr<float>(h) + a, b - a);
    });
    ctx->save_for_backward({gate, up});
    return h;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &gate = saved[0], &up = saved[1];
    auto dh = grads[0].contiguous();
    auto dg = torch::empty_like(gate), du = torch::empty_like(up);
    const auto& k = kernels();
    const bool bf16 = is_bf16(gate);
    at::parallel_for(0, gate.numel(), kElementGrain, [&](int64_t a, int64_t b) {
      if (bf16)
        k.swiglu_backward_bf16(ptr<uint16_t>(gate) + a, ptr<uint16_t>(up) + a, ptr<uint16_t>(dh) + a,
                               ptr<uint16_t>(dg) + a, ptr<uint16_t>(du) + a, b - a);
      else
        k.swiglu_backward_f32(ptr<float>(gate) + a, ptr<float>(up) + a, ptr<float>(dh) + a, ptr<float>(dg) + a,
                              ptr<float>(du) + a, b - a);
    });
    return {dg, du};
  }
};

// ---- RMSNorm ------------------------------------------------------------------------------------

// Rows of x (..., D) per task: about kElementGrain elements.
int64_t row_grain(int64_t D) { return std::max<int64_t>(1, kElementGrain / std::max<int64_t>(D, 1)); }

struct RmsNormFn : public torch::autograd::Function<RmsNormFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x_in,
                               const torch::Tensor& weight_in, double eps) {
    auto x = x_in.contiguous(), weight = weight_in.contiguous();
    const int64_t D = x.size(-1), rows = D ? x.numel() / D : 0;
    auto y = torch::empty_like(x);
    auto inv = torch::empty({rows}, x.options().dtype(torch::kFloat32));  // (rows): 1 / rms
    const auto& k = kernels();
    const bool bf16 = is_bf16(x);
    at::parallel_for(0, rows, row_grain(D), [&](int64_t a, int64_t b) {
      if (bf16)
        k.rms_norm_forward_bf16(ptr<uint16_t>(x), ptr<uint16_t>(weight), float(eps), D, a, b, ptr<uint16_t>(y),
                                ptr<float>(inv));
      else
        k.rms_norm_forward_f32(ptr<float>(x), ptr<float>(weight), float(eps), D, a, b, ptr<float>(y),
                               ptr<float>(inv));
    });
    ctx->save_for_backward({x, weight, inv});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &weight = saved[1], &inv = saved[2];
    auto dy = grads[0].contiguous();
    const int64_t D = x.size(-1), rows = D ? x.numel() / D : 0;
    torch::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {
      dx = torch::empty_like(x);
      const auto& k = kernels();
      const bool bf16 = is_bf16(x);
      at::parallel_for(0, rows, row_grain(D), [&](int64_t a, int64_t b) {
        if (bf16)
          k.rms_norm_backward_bf16(ptr<uint16_t>(x), ptr<uint16_t>(weight), ptr<float>(inv), ptr<uint16_t>(dy), D,
                                   a, b, ptr<uint16_t>(dx));
        else
          k.rms_norm_backward_f32(ptr<float>(x), ptr<float>(weight), ptr<float>(inv), ptr<float>(dy), D, a, b,
                                  ptr<float>(dx));
      });
    }
    if (ctx->needs_input_grad(1)) {  // a trained norm weight (full fine-tuning): dw = sum over rows of dy * normed
      auto normed = (x.to(torch::kFloat32).view({rows, D}) * inv.unsqueeze(1)).to(x.scalar_type());  // (rows, D)
      dw = (dy.view({rows, D}).to(torch::kFloat32) * normed.to(torch::kFloat32)).sum(0).to(weight.scalar_type());
    }
    return {dx, dw, torch::Tensor()};
  }
};

// ---- rotary embedding ---------------------------------------------------------------------------

// x (rows, heads, Dh) with tables cos, sin (rows, Dh) float32; no gradient for the tables.
struct RotaryFn : public torch::autograd::Function<RotaryFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x_in,
                               const torch::Tensor& cos, const torch::Tensor& sin) {
    auto x = x_in.contiguous();
    auto y = torch::empty_like(x);
    run(x, cos, sin, y, /*backward=*/false);
    ctx->save_for_backward({cos, sin});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    auto dy = grads[0].contiguous();
    auto dx = torch::empty_like(dy);
    run(dy, saved[0], saved[1], dx, /*backward=*/true);
    return {dx, torch::Tensor(), torch::Tensor()};
  }

  static void run(const torch::Tensor& in, const torch::Tensor& cos, const torch::Tensor& sin, torch::Tensor& out,
                  bool backward) {
    const int64_t rows = in.size(0), heads = in.size(1), Dh = in.size(2);
    const auto& k = kernels();
    const bool bf16 = is_bf16(in);
    const float *c = ptr<float>(cos), *s = ptr<float>(sin);
    at::parallel_for(0, rows, row_grain(heads * Dh), [&](int64_t a, int64_t b) {
      if (bf16)
        (backward ? k.rotary_backward_bf16 : k.rotary_forward_bf16)(ptr<uint16_t>(in), c, s, heads, Dh, a, b,
                                                                    ptr<uint16_t>(out));
      else
        (backward ? k.rotary_backward_f32 : k.rotary_forward_f32)(ptr<float>(in), c, s, heads, Dh, a, b,
                                                                  ptr<float>(out));
    });
  }
};

// ---- attention's masked softmax ---------------------------------------------------------------

// scores (B, heads, T, S) -> probs of the same shape and dtype; blocked (B * T, S) bytes. Saves the probs.
struct MaskedSoftmaxFn : public torch::autograd::Function<MaskedSoftmaxFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& scores_in,
                               const torch::Tensor& blocked) {
    auto scores = scores_in.contiguous();
    const int64_t heads = scores.size(1), T = scores.size(2), S = scores.size(3);
    const int64_t rows = scores.numel() / std::max<int64_t>(S, 1);
    auto probs = torch::empty_like(scores);
    const auto& k = kernels();
    const bool bf16 = is_bf16(scores);
    const auto* mask = static_cast<const uint8_t*>(blocked.data_ptr());
    at::parallel_for(0, rows, row_grain(S), [&](int64_t a, int64_t b) {
      std::vector<float> scratch(S);
      if (bf16)
        k.masked_softmax_forward_bf16(ptr<uint16_t>(scores), mask, S, T, heads, a, b, ptr<uint16_t>(probs),
                                      scratch.data());
      else
        k.masked_softmax_forward_f32(ptr<float>(scores), mask, S, T, heads, a, b, ptr<float>(probs), scratch.data());
    });
    ctx->save_for_backward({probs});
    return probs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto probs = ctx->get_saved_variables()[0];
    auto dp = grads[0].contiguous();
    auto ds = torch::empty_like(probs);
    const int64_t S = probs.size(-1), rows = probs.numel() / std::max<int64_t>(S, 1);
    const auto& k = kernels();
    const bool bf16 = is_bf16(probs);
    at::parallel_for(0, rows, row_grain(S), [&](int64_t a, int64_t b) {
      if (bf16)
        k.softmax_backward_bf16(ptr<uint16_t>(probs), ptr<uint16_t>(dp), S, a, b, ptr<uint16_t>(ds));
      else
        k.softmax_backward_f32(ptr<float>(probs), ptr<float>(dp), S, a, b, ptr<float>(ds));
    });
    return {ds, torch::Tensor()};
  }
};

}  // namespace

bool fused_elementwise_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("REGLAGE_FUSED_ELEMENTWISE");
    if (v == nullptr || *v == '\0') return true;
    const std::string s = v;
    if (s != "on" && s != "off") fail("REGLAGE_FUSED_ELEMENTWISE = '", s, "' (expected on or off)");
    return s == "on";
  }();
  return enabled;
}

bool fused_elementwise_fits(const torch::Tensor& x) {
  const auto t = x.scalar_type();
  return fused_elementwise_enabled() && x.device().is_cpu() && (t == torch::kFloat32 || t == torch::kBFloat16);
}

torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up) {
  if (!fused_elementwise_fits(gate) || gate.scalar_type() != up.scalar_type() || gate.sizes() != up.sizes())
    fail("swiglu: gate ", gate.sizes(), " ", gate.scalar_type(), " and up ", up.sizes(), " ", up.scalar_type(),
         " (expected one shape and dtype, float32 or bfloat16 on the CPU)");
  return SwigluFn::apply(gate, up);
}

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  if (!fused_elementwise_fits(x) || weight.scalar_type() != x.scalar_type() || weight.dim() != 1 ||
      x.dim() == 0 || weight.size(0) != x.size(-1))
    fail("rms_norm: x ", x.sizes(), " ", x.scalar_type(), " and weight ", weight.sizes(), " ",
         weight.scalar_type(), " (expected weight (D) of x's dtype for x (..., D), float32 or bfloat16 on the CPU)");
  return RmsNormFn::apply(x, weight, eps);
}

torch::Tensor rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const bool shapes = x.dim() >= 3 && x.size(-1) % 2 == 0 && cos.dim() == x.dim() && cos.sizes() == sin.sizes() &&
                      cos.size(-2) == 1 && cos.size(-1) == x.size(-1);
  if (!fused_elementwise_fits(x) || cos.scalar_type() != torch::kFloat32 || sin.scalar_type() != torch::kFloat32 ||
      !shapes)
    fail("rotary: x ", x.sizes(), " ", x.scalar_type(), " and tables ", cos.sizes(), " ", cos.scalar_type(),
         " (expected x (..., heads, Dh), Dh even, float32 or bfloat16, and float32 tables (..., 1, Dh))");
  const int64_t H = x.size(-2), Dh = x.size(-1), rows = x.numel() / std::max<int64_t>(H * Dh, 1);
  auto table_shape = x.sizes().vec();
  table_shape[x.dim() - 2] = 1;
  auto table = [&](const torch::Tensor& t) { return t.expand(table_shape).contiguous().view({rows, Dh}); };
  return RotaryFn::apply(x.reshape({rows, H, Dh}), table(cos), table(sin)).view(x.sizes());
}

torch::Tensor masked_softmax(const torch::Tensor& scores, const torch::Tensor& blocked) {
  const bool shapes = scores.dim() == 4 && blocked.dim() == 3 && blocked.size(1) == scores.size(2) &&
                      blocked.size(2) == scores.size(3) && (blocked.size(0) == 1 || blocked.size(0) == scores.size(0));
  if (!fused_elementwise_fits(scores) || blocked.scalar_type() != torch::kBool || !shapes)
    fail("masked_softmax: scores ", scores.sizes(), " ", scores.scalar_type(), " and mask ", blocked.sizes(), " ",
         blocked.scalar_type(),
         " (expected scores (B, heads, T, S), float32 or bfloat16, and a bool mask (B or 1, T, S))");
  auto mask = blocked.expand({scores.size(0), scores.size(2), scores.size(3)}).contiguous();  // (B, T, S)
  return MaskedSoftmaxFn::apply(scores, mask);
}

torch::Tensor neg_softmax_rows_(torch::Tensor& z) {
  if (z.scalar_type() != torch::kFloat32 || z.dim() != 2 || !z.is_contiguous() || !z.device().is_cpu())
    fail("neg_softmax_rows_: z ", z.sizes(), " ", z.scalar_type(),
         " (expected a contiguous float32 (N, V) on the CPU)");
  const int64_t N = z.size(0), V = z.size(1);
  auto lse = torch::empty({N}, z.options());  // (N)
  const auto& k = kernels();
  at::parallel_for(0, N, 1, [&](int64_t a, int64_t b) { k.neg_softmax_rows(ptr<float>(z), V, a, b, ptr<float>(lse)); });
  return lse;
}

torch::Tensor onehot_minus_softmax_rows_(torch::Tensor& z, const torch::Tensor& targets) {
  if (z.scalar_type() != torch::kBFloat16 || z.dim() != 2 || !z.is_contiguous() || !z.device().is_cpu() ||
      z.size(1) < 1)
    fail("onehot_minus_softmax_rows_: z ", z.sizes(), " ", z.scalar_type(),
         " (expected a contiguous bfloat16 (N, V) on the CPU, V >= 1)");
  const int64_t N = z.size(0), V = z.size(1);
  if (targets.scalar_type() != torch::kLong || targets.dim() != 1 || targets.size(0) != N)
    fail("onehot_minus_softmax_rows_: targets ", targets.sizes(), " ", targets.scalar_type(), " (expected (", N,
         ") int64)");
  auto t = targets.contiguous();
  if (N > 0 && (t.min().item<int64_t>() < 0 || t.max().item<int64_t>() >= V))
    fail("onehot_minus_softmax_rows_: a target outside [0, ", V, ")");
  auto lse = torch::empty({N}, z.options().dtype(torch::kFloat32));  // (N)
  const auto& k = kernels();
  at::parallel_for(0, N, 1, [&](int64_t a, int64_t b) {
    thread_local std::vector<float> scratch;
    if (int64_t(scratch.size()) < V) scratch.resize(size_t(V));
    k.onehot_minus_softmax_rows_bf16(ptr<uint16_t>(z), t.data_ptr<int64_t>(), V, a, b, ptr<float>(lse),
                                     scratch.data());
  });
  return lse;
}

float exp_shifted(const float* z, float shift, float t, int64_t n, float* out) {
  return kernels().exp_shifted(z, shift, t, n, out);
}

}  // namespace reglage::kernels
