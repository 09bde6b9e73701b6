#include "framework/kernels/batched_matmul.h"

#include <ATen/Parallel.h>

#include "framework/kernels/bf16_products.h"
#include "framework/kernels/low_rank.h"

namespace reglage::kernels {

namespace {

// Multiply-adds per batch entry below which one bmm call beats a call per entry (64^3).
constexpr int64_t kMinEntryProduct = int64_t(1) << 18;

// The forward product without autograd: out[g] = alpha a[g] b[g], batch entries over the threads.
torch::Tensor bmm_threads(const torch::Tensor& a, const torch::Tensor& b, double alpha) {
  const int64_t G = a.size(0);
  auto out = torch::zeros({G, a.size(1), b.size(2)}, a.options());  // (G, M, N)
  at::parallel_for(0, G, 1, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) out[g].addmm_(a[g], b[g], /*beta=*/1, alpha);  // beta = 1: no clearing pass
  });
  return out;
}

// Rows of one batch entry per parallel task of own_products: whole row tiles on both vector paths (4 and 6).
constexpr int64_t kTaskRows = 192;

// The float32 product in the outer-product kernel of low_rank.h, over tasks of (entry, block of rows): each
// element sums k in order, so the bits do not depend on the threads. a through any strides (a transpose is
// read in place); b made row-major first when its columns are strided (k^T forward, v^T backward: one copy of
// (G, K, N), 4.7 MB a call at SmolLM2's 8 x 256). At that shape (24 entries of 768 x 64 x 256, 2 threads, Intel
// Xeon VM with AVX-512) q k^T took 2.3-2.5 ms against OpenBLAS's 2.5-3.5 one entry per thread, p v 1.9-2.4
// against 2.5-3.1; with 100 keys q k^T ran even (bench/README.md, fourth 2026-12-07 section).
torch::Tensor own_products(const torch::Tensor& a, torch::Tensor b, double alpha) {
  if (b.size(2) > 1 && b.stride(2) != 1) b = b.contiguous();  // (G, K, N), row-major entries
  const int64_t G = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  auto out = torch::empty({G, M, N}, a.options());  // (G, M, N)
  const float* ap = a.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t blocks = (M + kTaskRows - 1) / kTaskRows;  // tasks per entry
  at::parallel_for(0, G * blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t g = t / blocks, m0 = (t % blocks) * kTaskRows, m1 = std::min(M, m0 + kTaskRows);
      outer_product_rows(ap + g * a.stride(0), a.stride(1), a.stride(2), bp + g * b.stride(0), b.stride(1),
                         op + g * M * N, N, K, N, m0, m1, float(alpha), /*accumulate=*/false);
    }
  });
  return out;
}

// float32 in our kernel on a vector path; float64 (and float32 without one) one BLAS call per entry.
torch::Tensor float_products(const torch::Tensor& a, const torch::Tensor& b, double alpha) {
  return low_rank_fits(a) ? own_products(a, b, alpha) : bmm_threads(a, b, alpha);
}

// alpha * a @ b for bfloat16 (and other dtypes LibTorch's bmm takes), alpha inside the product: baddbmm with
// beta = 0 hands it to oneDNN as the output scale, so the scores are rounded to bfloat16 once and no pass
// scales them (forward) or their gradient (backward). bmm then mul_ rounded twice and cost a pass each way over
// the (G, M, N) scores: 27 ms of a 4.2 s bfloat16 LoRA SFT step on SmolLM2 at 8 x 256. With alpha a power of two
// (1/sqrt(Dh) for Dh = 4, 16, 64, 256) both give the same bits; otherwise this one is the closer to the exact
// product.
torch::Tensor scaled_bmm(const torch::Tensor& a, const torch::Tensor& b, double alpha) {
  auto out = torch::empty({a.size(0), a.size(1), b.size(2)}, a.options());  // (G, M, N); beta = 0 ignores it
  return at::baddbmm(out, a, b, /*beta=*/0, alpha);
}

// Whether each batch entry is at least kMinEntryProduct multiply-adds.
bool large_entries(const torch::Tensor& a, const torch::Tensor& b) {
  return a.size(1) * a.size(2) * b.size(2) >= kMinEntryProduct;
}

// The product either way: bfloat16 through baddbmm, or widened to float32 where the CPU multiplies faster in
// float32 (bf16_products.h: alpha inside the float32 sum, rounded once); float32/float64 one batch entry per
// thread.

torch::Tensor product(const torch::Tensor& a, const torch::Tensor& b, double alpha) {
  if (widens_bf16(a, b) && large_entries(a, b))
    // b widened and made row-major in one pass (own_products would copy a widened transpose again).
    return float_products(a.to(torch::kFloat32), torch::empty(b.sizes(), b.options().dtype(torch::kFloat32)).copy_(b),
                          alpha)
        .to(torch::kBFloat16);  // (G, M, N)
  return a.scalar_type() == torch::kBFloat16 ? scaled_bmm(a, b, alpha) : float_products(a, b, alpha);
}

struct BatchedMatmulFn : public torch::autograd::Function<BatchedMatmulFn> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a, const torch::Tensor& b,
                               double alpha) {
    ctx->save_for_backward({a, b});
    ctx->saved_data["alpha"] = alpha;
    return product(a, b, alpha);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &a = saved[0], &b = saved[1];
    const auto& g = grads[0];  // (G, M, N)
    const double alpha = ctx->saved_data["alpha"].toDouble();
    torch::Tensor ga, gb;
    if (ctx->needs_input_grad(0)) ga = product(g, b.transpose(1, 2), alpha);  // (G, M, K)
    if (ctx->needs_input_grad(1)) gb = product(a.transpose(1, 2), g, alpha);  // (G, K, N)
    return {ga, gb, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor batched_matmul(const torch::Tensor& a, const torch::Tensor& b, double alpha) {
  const bool fits = a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0) && a.size(2) == b.size(1) &&
                    a.scalar_type() == b.scalar_type() && a.device().is_cpu() && b.device().is_cpu();
  // bfloat16 stays with LibTorch's batched product (oneDNN's was 10-20% faster than one entry per thread), with
  // alpha as its output scale.
  const bool scaled_bf16 = fits && a.scalar_type() == torch::kBFloat16 && alpha != 1.0;
  const bool blas = a.scalar_type() == torch::kFloat32 || a.scalar_type() == torch::kFloat64 || widens_bf16(a, b);
  // Small entries (stories260K's 8-wide heads) cost more in per-call overhead than they compute: torch::bmm.
  const bool large = fits && large_entries(a, b);
  if (!scaled_bf16 && (!fits || !blas || !large))
    return alpha == 1.0 ? torch::bmm(a, b) : torch::bmm(a, b).mul_(alpha);
  if (torch::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad()))
    return BatchedMatmulFn::apply(a, b, alpha);
  return product(a, b, alpha);
}

}  // namespace reglage::kernels
