#include "framework/kernels/frozen_linear.h"

#include <dlfcn.h>

#include "framework/kernels/bf16_products.h"

namespace reglage::kernels {

namespace {

struct Frozen {
  torch::Tensor w, bias;  // bias may be undefined
};

// x (N, in) W^T (+ bias) with gradient for x only: W and bias are no graph inputs (an undefined bias could
// not be one); W travels in ctx.
struct FrozenLinearFn : public torch::autograd::Function<FrozenLinearFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const Frozen& f) {
    ctx->saved_data["w"] = f.w;
    auto y = matmul_2d(x, f.w.t());  // (N, out)
    return f.bias.defined() ? y.add_(f.bias) : y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto w = ctx->saved_data["w"].toTensor();
    return {matmul_2d(grads[0].contiguous(), w), torch::Tensor()};  // (N, in)
  }
};

}  // namespace

bool blas_is_openblas() {
  // LibTorch loads its BLAS before main(): OpenBLAS exports openblas_get_corename.
  static const bool openblas = dlsym(RTLD_DEFAULT, "openblas_get_corename") != nullptr;
  return openblas;
}

torch::Tensor matmul_2d(const torch::Tensor& a, const torch::Tensor& b) {
  // bfloat16 on a CPU that multiplies faster in float32: the float32 product of the widened operands, rounded
  // once to bfloat16 as oneDNN's product is (which also sums in float32).
  if (widens_bf16(a, b)) return matmul_2d(a.to(torch::kFloat32), b.to(torch::kFloat32)).to(torch::kBFloat16);
  const bool blas_float = a.scalar_type() == torch::kFloat32 || a.scalar_type() == torch::kFloat64;
  if (!a.device().is_cpu() || !blas_float || a.dim() != 2 || b.dim() != 2 || !blas_is_openblas())
    return torch::mm(a, b);
  auto c = torch::zeros({a.size(0), b.size(1)}, a.options());  // (M, N)
  return c.addmm_(a, b);                                        // beta = 1: no BLAS clearing pass
}

namespace {

// c += alpha a b in place: widened (the sum in float32, rounded once) or LibTorch's own.
void addmm_either_(torch::Tensor& c, const torch::Tensor& a, const torch::Tensor& b, double alpha, bool widened) {
  if (!widened || c.scalar_type() != torch::kBFloat16) {
    c.addmm_(a, b, /*beta=*/1, alpha);
    return;
  }
  auto cf = c.to(torch::kFloat32);  // (M, N)
  cf.addmm_(a.to(torch::kFloat32), b.to(torch::kFloat32), /*beta=*/1, alpha);
  c.copy_(cf);
}

}  // namespace

void addmm_2d_(torch::Tensor& c, const torch::Tensor& a, const torch::Tensor& b, double alpha) {
  addmm_either_(c, a, b, alpha, widens_bf16(a, b));
}

torch::Tensor narrow_mm(const torch::Tensor& a, const torch::Tensor& b) {
  if (widens_bf16_narrow(a, b)) return matmul_2d(a.to(torch::kFloat32), b.to(torch::kFloat32)).to(torch::kBFloat16);
  return torch::mm(a, b);
}

void narrow_addmm_(torch::Tensor& c, const torch::Tensor& a, const torch::Tensor& b, double alpha) {
  addmm_either_(c, a, b, alpha, widens_bf16_narrow(a, b));
}

torch::Tensor frozen_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias) {
  const bool frozen = !w.requires_grad() && (!bias.defined() || !bias.requires_grad());
  const bool plain = x.dim() >= 1 && w.dim() == 2 && x.scalar_type() == w.scalar_type() &&
                     (!bias.defined() || bias.scalar_type() == w.scalar_type());
  if (!frozen || !plain || !x.device().is_cpu() || !(blas_is_openblas() || widens_bf16(x, w)))
    return torch::nn::functional::linear(x, w, bias);
  auto shape = x.sizes().vec();
  shape.back() = w.size(0);
  auto x2 = x.reshape({-1, w.size(1)});  // (N, in)
  torch::Tensor y;
  if (torch::GradMode::is_enabled() && x.requires_grad()) {
    y = FrozenLinearFn::apply(x2, Frozen{w, bias});
  } else {
    y = matmul_2d(x2, w.t());
    if (bias.defined()) y.add_(bias);
  }
  return x.dim() == 2 ? y : y.view(shape);  // (..., out); a 2-D input's output is no view (callers add to it in place)
}

}  // namespace reglage::kernels
