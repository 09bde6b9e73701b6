#include "framework/lora/lora_fused.h"

#include "framework/kernels/frozen_linear.h"
#include "framework/kernels/low_rank.h"
#include "framework/kernels/weight_only.h"

namespace reglage::lora {

namespace {

// What forward hands backward besides the saved tensors: the frozen base and the adapters' scales.
struct FrozenBase {
  torch::Tensor weight, weight_scale, bias;  // scale and bias may be undefined
  std::vector<double> scales;                // one per adapter
};

// The adapter's narrow products on LibTorch's path (blas_forward, blas_backward), t = x A^T (N, r) and g B
// (N, r). In float32 on OpenBLAS as the transposes of
// A x^T and B^T g^T: (r, N) outputs, which OpenBLAS splits over the threads along N. In alternating LoRA SFT
// steps on SmolLM2 (batch 8 x 256, rank 16 on every linear layer, float32, 2 threads, LibTorch 1.13 with
// OpenBLAS) the step took 8.53 instead of 8.95 s (faster in 8 of 8) and 9.20 instead of 9.47 s (7 of 8) in a
// later round. Kept in the direct form: bfloat16 (oneDNN; 4.98 against 4.80 s, 3 of 8), LibTorch 2.11's MKL
// (8.42 against 8.28 s, 3 of 8), and the gradients of A and B, whose transposed forms (x^T (g B), g^T t) were
// slower on OpenBLAS too (0 of 8). The transposed result is a view: its users read it through strides.
// bfloat16 x on a CPU with avx512_bf16 (kernels::low_rank_bf16_fits) takes the pair kernel: float32 sums,
// rounded once to bfloat16.
torch::Tensor narrow_product(const torch::Tensor& x, const torch::Tensor& factor) {  // x (N, k), factor (r, k)
  if (kernels::low_rank_bf16_fits(x)) return kernels::narrow_rows_product(x, factor).to(x.scalar_type());
  static const bool openblas = kernels::blas_is_openblas();
  if (x.scalar_type() != torch::kFloat32 || !openblas) return kernels::narrow_mm(x, factor.t());  // (N, r)
  return torch::mm(factor, x.t()).t();                                                      // (N, r)
}

// Whether the adapters' products take kernels/low_rank.h's kernels: float32 on a vector path. At SmolLM2's
// shapes (2,048 rows, rank 16) they ran at 130-214 GFLOP/s against OpenBLAS's 95-180 (best of 15, hot
// caches); alternating float32 LoRA SFT steps (batch 8 x 256, 2 threads, AVX-512 VM) took 7.61 instead of
// 7.81 s on LibTorch 1.13 / OpenBLAS (faster in 8 of 10) and 7.76 instead of 8.03 s on LibTorch 2.11 / MKL (7
// of 8). Gradients move by rounding: 1.5e-6 relative (L2) on SmolLM2, 4e-7 on stories260K.
bool own_kernels(const torch::Tensor& x) { return kernels::low_rank_fits(x); }

// The forward on our kernels: y = sum_a scale_a t_a B_a^T written first (no clearing pass, no read of y), then
// the base's product accumulated onto it by the BLAS, then the bias. abt (if given) receives each adapter's
// A, B and t = x A^T (N, r), as blas_forward's.
torch::Tensor own_forward(const torch::Tensor& x, const FrozenBase& base, const std::vector<torch::Tensor>& ab,
                          std::vector<torch::Tensor>* abt) {
  auto y = torch::empty({x.size(0), base.weight.size(0)}, x.options());  // (N, out)
  for (size_t a = 0; a < base.scales.size(); ++a) {
    const auto &A = ab[2 * a], &B = ab[2 * a + 1];
    auto t = kernels::narrow_rows_product(x, A);                                               // (N, r) = x A^T
    kernels::outer_product_(y, t, B.t().contiguous(), base.scales[a], /*accumulate=*/a > 0);  // (+)= s t B^T
    if (abt) abt->insert(abt->end(), {A, B, t});
  }
  kernels::stored_linear_add_(y, x, base.weight, base.weight_scale);  // += x W^T
  if (base.bias.defined()) y.add_(base.bias.to(y.scalar_type()));
  return y;
}

// The forward on LibTorch's operators: the base's product, then each adapter's added in place. The adapter
// computes in x's dtype: float32, or bfloat16 on casts of its float32 master weights (as autocast runs it;
// the gradients are cast back in backward). abx receives each adapter's A and B in x's dtype and t.
torch::Tensor blas_forward(const torch::Tensor& x, const FrozenBase& base, const std::vector<torch::Tensor>& ab,
                           std::vector<torch::Tensor>* abx) {
  auto y = kernels::stored_linear(x, base.weight, base.weight_scale, base.bias);  // (N, out), a fresh tensor
  for (size_t a = 0; a < base.scales.size(); ++a) {
    auto A = ab[2 * a].to(x.scalar_type()), B = ab[2 * a + 1].to(x.scalar_type());
    auto t = narrow_product(x, A);                                // (N, r)
    kernels::narrow_addmm_(y, t, B.t(), base.scales[a]);         // y += scale t B^T, in place
    if (abx) abx->insert(abx->end(), {A, B, t});
  }
  return y;
}

// The backward on our kernels: each adapter's gradients from g and t, x's gradient formed from the adapters'
// terms (s g B) A first and the base's g W accumulated onto it.
void own_backward(const torch::Tensor& g, const torch::Tensor& x, const std::vector<torch::Tensor>& saved,
                  const std::vector<double>& scales, const torch::Tensor& w, const torch::Tensor& w_scale,
                  torch::autograd::AutogradContext* ctx, torch::autograd::variable_list& out) {
  const bool want_x = ctx->needs_input_grad(0);
  torch::Tensor gx;  // (N, in)
  for (size_t a = 0; a < scales.size(); ++a) {
    const auto &A = saved[1 + 3 * a], &B = saved[2 + 3 * a], &t = saved[3 + 3 * a];
    const bool want_a = ctx->needs_input_grad(1 + 2 * a), want_b = ctx->needs_input_grad(2 + 2 * a);
    if (want_b) out[2 + 2 * a] = kernels::outer_product(t.t(), g, scales[a]).t().contiguous();  // (out, r) = s g^T t
    if (!want_a && !want_x) continue;
    auto gt = kernels::narrow_rows_product(g, B.t().contiguous()).mul_(scales[a]);  // (N, r) = s g B
    if (want_a) out[1 + 2 * a] = kernels::outer_product(gt.t(), x, 1.0);            // (r, in) = gt^T x
    if (!want_x) continue;
    const bool first = !gx.defined();
    if (first) gx = torch::empty({g.size(0), A.size(1)}, g.options());
    kernels::outer_product_(gx, gt, A, 1.0, /*accumulate=*/!first);  // (+)= gt A
  }
  if (!want_x) return;
  if (gx.defined())
    kernels::stored_linear_grad_input_add_(gx, g, w, w_scale);  // += g W
  else
    gx = kernels::stored_linear_grad_input(g, w, w_scale);
  out[0] = gx;
}

// The backward on LibTorch's operators, the mirror of blas_forward. In bfloat16 on a CPU with avx512_bf16
// (kernels::low_rank_bf16_fits) the adapters' narrow products take the pair kernels instead of oneDNN's (at
// SmolLM2's shapes 340-400 against 160-310 GFLOP/s): A's and B's gradients are their float32 sums, no longer
// rounded to bfloat16 first, and s g B is rounded once.
void blas_backward(const torch::Tensor& g, const torch::Tensor& x, const std::vector<torch::Tensor>& saved,
                   const std::vector<double>& scales, const torch::Tensor& w, const torch::Tensor& w_scale,
                   torch::ScalarType master, torch::autograd::AutogradContext* ctx,
                   torch::autograd::variable_list& out) {
  const bool want_x = ctx->needs_input_grad(0);
  if (want_x) out[0] = kernels::stored_linear_grad_input(g, w, w_scale);  // (N, in) = g W
  const bool pairs = kernels::low_rank_bf16_fits(g);
  for (size_t a = 0; a < scales.size(); ++a) {
    const auto &A = saved[1 + 3 * a], &B = saved[2 + 3 * a], &t = saved[3 + 3 * a];
    const bool want_a = ctx->needs_input_grad(1 + 2 * a), want_b = ctx->needs_input_grad(2 + 2 * a);
    const double s = scales[a];
    if (want_b) {
      auto gb = pairs ? kernels::tokens_product_bf16(t, g, s) : kernels::narrow_mm(t.t(), g).mul_(s);  // (r, out)
      out[2 + 2 * a] = gb.t().to(master).contiguous();                                         // (out, r)
    }
    if (!want_a && !want_x) continue;
    auto gt = pairs ? kernels::narrow_rows_product(g, B.t()).mul_(s).to(g.scalar_type())
                    : narrow_product(g, B.t()).mul_(s);  // (N, r) = s g B
    if (want_a)                                          // (r, in) = gt^T x
      out[1 + 2 * a] = (pairs ? kernels::tokens_product_bf16(gt, x, 1.0) : kernels::narrow_mm(gt.t(), x)).to(master);
    if (want_x) kernels::narrow_addmm_(out[0], gt, A);  // += s g B A, in place
  }
}

// Inputs: x (N, in), then A_0, B_0, A_1, B_1, ... Saved: x, then per adapter A, B (in x's dtype) and
// t = x A^T (N, r).
struct FusedLoraFn : public torch::autograd::Function<FusedLoraFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, at::TensorList ab,
                               const FrozenBase& base) {
    const std::vector<torch::Tensor> abv(ab.begin(), ab.end());
    const bool own = own_kernels(x) && !base.scales.empty();
    std::vector<torch::Tensor> saved{x};
    auto y = own ? own_forward(x, base, abv, &saved) : blas_forward(x, base, abv, &saved);  // (N, out)
    ctx->save_for_backward(saved);
    ctx->saved_data["own"] = own;
    ctx->saved_data["w"] = base.weight;
    ctx->saved_data["scale"] = base.weight_scale;
    ctx->saved_data["scales"] = base.scales;
    ctx->saved_data["master_dtype"] = ab.empty() ? x.scalar_type() : ab[0].scalar_type();
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];                // (N, in)
    const auto g = grads[0].contiguous();    // (N, out)
    const auto scales = ctx->saved_data["scales"].toDoubleVector();
    const auto w = ctx->saved_data["w"].toTensor(), w_scale = ctx->saved_data["scale"].toTensor();
    // Outputs: x's gradient, then A_a's and B_a's in input order (the TensorList counts as 2n inputs), then
    // an undefined one for the FrozenBase argument.
    torch::autograd::variable_list out(2 + 2 * scales.size());
    if (ctx->saved_data["own"].toBool())
      own_backward(g, x, saved, scales, w, w_scale, ctx, out);
    else
      blas_backward(g, x, saved, scales, w, w_scale, ctx->saved_data["master_dtype"].toScalarType(), ctx, out);
    return out;
  }
};

}  // namespace

bool fused_lora_fits(const torch::Tensor& x2, const torch::Tensor& weight, const torch::Tensor& bias,
                     const std::vector<LoraTerm>& terms) {
  if (x2.dim() != 2 || !x2.device().is_cpu()) return false;
  if (weight.requires_grad() || (bias.defined() && bias.requires_grad())) return false;
  const auto x_type = x2.scalar_type(), w_type = weight.scalar_type();
  // float32 compute on a float32, bfloat16 or int8 base; bfloat16 compute on a bfloat16 base.
  const bool float32 = x_type == torch::kFloat32 &&
                       (w_type == torch::kFloat32 || w_type == torch::kBFloat16 || w_type == torch::kChar);
  const bool bfloat16 = x_type == torch::kBFloat16 && w_type == torch::kBFloat16;
  if (!float32 && !bfloat16) return false;
  for (const auto& term : terms)
    if (term.A.scalar_type() != torch::kFloat32 || term.B.scalar_type() != torch::kFloat32 || !term.A.device().is_cpu())
      return false;
  return true;
}

torch::Tensor fused_lora_linear(const torch::Tensor& x2, const torch::Tensor& weight,
                                const torch::Tensor& weight_scale, const torch::Tensor& bias,
                                const std::vector<LoraTerm>& terms) {
  FrozenBase base{weight, weight_scale, bias, {}};
  std::vector<torch::Tensor> ab;
  for (const auto& term : terms) {
    ab.push_back(term.A);
    ab.push_back(term.B);
    base.scales.push_back(term.scale);
  }
  auto x = x2.contiguous();
  bool any_grad = x.requires_grad();
  for (const auto& p : ab) any_grad = any_grad || p.requires_grad();
  if (torch::GradMode::is_enabled() && any_grad) return FusedLoraFn::apply(x, at::TensorList(ab), base);  // a TensorList, so each tensor is a graph input
  torch::NoGradGuard no_grad;  // the same arithmetic as FusedLoraFn::forward, nothing saved
  if (own_kernels(x) && !terms.empty()) return own_forward(x, base, ab, nullptr);
  return blas_forward(x, base, ab, nullptr);
}

}  // namespace reglage::lora
