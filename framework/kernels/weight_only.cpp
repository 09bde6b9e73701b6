#include "framework/kernels/weight_only.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>
#include <string>

#include "framework/core/error.h"
#include "framework/kernels/frozen_linear.h"
#include "framework/kernels/gemm_paths.h"

namespace {

#include "framework/kernels/gemm_simd.h"

struct VScalar {  // one lane: the reference the vector paths are tested against, and the fallback
  using reg = float;
  static constexpr int W = 1, R = 4, MB = 4, R1 = 4, R_I8 = 4, MB_I8 = 4;
  static constexpr bool kPackedNarrow = false;
  static constexpr int MR_B = 4, NV_B = 4;
  static reg zero() { return 0.0f; }
  static reg load_x(const float* p) { return *p; }
  template <class T>
  static reg load_w(const T* p) { return widen_one(*p); }
  static reg fma(reg a, reg b, reg c) { return a * b + c; }
  static float sum(reg a) { return a; }
  static reg set1(float v) { return v; }
  static reg mul(reg a, reg b) { return a * b; }
  static reg add(reg a, reg b) { return a + b; }
  static void store(float* p, reg v) { *p = v; }
  static reg load_first(const float* p, int) { return *p; }  // never called: one lane has no partial vector
  static void store_first(float* p, reg v, int) { *p = v; }
};

}  // namespace

namespace reglage::kernels {

namespace detail {

void gemm_rows_scalar(const float* x, int64_t M, int64_t K, const void* w, int format, const float* scale,
                      float* y, int64_t N, int64_t n0, int64_t n1) {
  gemm_rows_any<VScalar>(x, M, K, w, format, scale, y, N, n0, n1);
}

void outer_rows_scalar(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                       int64_t ldc, int64_t K, int64_t N, int64_t m0, int64_t m1, float alpha, bool accumulate) {
  outer_rows<VScalar>(a, a_row, a_col, b, ldb, c, ldc, K, N, m0, m1, alpha, accumulate);
}

}  // namespace detail

namespace {

using RowsFn = void (*)(const float*, int64_t, int64_t, const void*, int, const float*, float*, int64_t, int64_t,
                        int64_t);

#ifdef REGLAGE_SCALAR_KERNELS_ONLY  // not x86: gemm_avx*.cpp are not built
bool cpu_has_avx512() { return false; }
bool cpu_has_avx2() { return false; }
#else
bool cpu_has_avx512() { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"); }
bool cpu_has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#endif

// The best path the CPU has, lowered by REGLAGE_KERNELS when set.
std::string choose_path() {
  std::string best = cpu_has_avx512() ? "avx512" : cpu_has_avx2() ? "avx2" : "scalar";
  const char* forced = std::getenv("REGLAGE_KERNELS");
  if (forced == nullptr || *forced == '\0') return best;
  const std::string f = forced;
  if (f != "avx512" && f != "avx2" && f != "scalar")
    fail("REGLAGE_KERNELS = '", f, "' (expected avx512, avx2 or scalar)");
  if (f == "avx512" && best != "avx512") return best;
  if (f == "avx2" && best == "scalar") return best;
  return f;
}

RowsFn rows_fn(const std::string& path) {
#ifndef REGLAGE_SCALAR_KERNELS_ONLY
  if (path == "avx512") {
    if (!cpu_has_avx512()) fail("kernel path avx512: this CPU lacks AVX-512 F/BW");
    return detail::gemm_rows_avx512;
  }
  if (path == "avx2") {
    if (!cpu_has_avx2()) fail("kernel path avx2: this CPU lacks AVX2/FMA");
    return detail::gemm_rows_avx2;
  }
#endif
  if (path == "scalar") return detail::gemm_rows_scalar;
  fail("kernel path '", path, "' (expected avx512, avx2 or scalar)");
}

int format_of(const torch::Tensor& w) {
  switch (w.scalar_type()) {
    case torch::kFloat32: return kGemmF32;
    case torch::kBFloat16: return kGemmBF16;
    case torch::kChar: return kGemmI8;
    default: fail("weight-only product: weight dtype ", w.scalar_type(), " (expected float32, bfloat16 or int8)");
  }
}

void check_operands(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& scale) {
  if (x.scalar_type() != torch::kFloat32)
    fail("weight-only product: activations are ", x.scalar_type(), " (the stored-weight path computes in float32)");
  if (w.dim() != 2 || x.size(-1) != w.size(1))
    fail("weight-only product: x ", x.sizes(), " against weight ", w.sizes());
  if (w.scalar_type() == torch::kChar && (!scale.defined() || scale.numel() != w.size(0)))
    fail("weight-only product: an int8 weight (", w.size(0), " rows) needs one float32 scale per row");
}

// y (M, N) = x (M, K) W^T by the vector kernel, the N rows split among LibTorch's intra-op threads.
torch::Tensor small_product(const torch::Tensor& x2, const torch::Tensor& w, const torch::Tensor& scale,
                            RowsFn fn) {
  const int64_t M = x2.size(0), K = x2.size(1), N = w.size(0);
  auto y = torch::empty({M, N}, x2.options());
  const float* xp = x2.data_ptr<float>();
  const void* wp = w.data_ptr();
  const float* sp = scale.defined() ? scale.data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int format = format_of(w);
  // Work in blocks of 4 rows (the kernels' R) so that a thread's share is whole register blocks.
  const int64_t blocks = (N + 3) / 4;
  at::parallel_for(0, blocks, /*grain_size=*/16, [&](int64_t b0, int64_t b1) {
    fn(xp, M, K, wp, format, sp, yp, N, b0 * 4, std::min(N, b1 * 4));
  });
  return y;
}

// Rows [n0, n0 + count) of the stored weight, widened.
torch::Tensor widen_rows(const torch::Tensor& w, const torch::Tensor& scale, int64_t n0, int64_t count) {
  return widen(w.narrow(0, n0, count), scale.defined() ? scale.narrow(0, n0, count) : scale);
}

int64_t rows_per_chunk(const torch::Tensor& w) { return std::max<int64_t>(1, kWidenChunk / std::max<int64_t>(1, w.size(1))); }

// y (M, N) = x (M, K) W^T with the weight widened chunk by chunk for LibTorch's float32 product.
torch::Tensor large_product(const torch::Tensor& x2, const torch::Tensor& w, const torch::Tensor& scale) {
  const int64_t N = w.size(0), step = rows_per_chunk(w);
  if (step >= N) return matmul_2d(x2, widen(w, scale).t());
  auto y = torch::empty({x2.size(0), N}, x2.options());
  for (int64_t n0 = 0; n0 < N; n0 += step) {
    const int64_t count = std::min(step, N - n0);
    y.narrow(1, n0, count).copy_(matmul_2d(x2, widen_rows(w, scale, n0, count).t()));
  }
  return y;
}

// The product without autograd: x (..., K) -> (..., N).
torch::Tensor product(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& scale) {
  check_operands(x, w, scale);
  auto shape = x.sizes().vec();
  shape.back() = w.size(0);
  auto x2 = x.reshape({-1, w.size(1)}).contiguous();
  static const RowsFn fn = rows_fn(cpu_path());
  const bool small = x2.size(0) <= kSmallRows && x.device().is_cpu() && w.is_contiguous();
  auto y = small ? small_product(x2, w, scale, fn) : large_product(x2, w, scale);
  return y.view(shape);
}

struct WeightRef {
  torch::Tensor w, scale;
};

// Autograd for x only: the stored weight is frozen (never a leaf that wants a gradient).
struct WeightOnlyLinearFn : public torch::autograd::Function<WeightOnlyLinearFn> {
  // w and scale are no inputs of the graph (an undefined scale could not be one): they travel in ctx.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const WeightRef& ref) {
    ctx->saved_data["w"] = ref.w;  // the stored weight itself, not a widened copy
    ctx->saved_data["scale"] = ref.scale;
    return product(x, ref.w, ref.scale);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto w = ctx->saved_data["w"].toTensor();
    const auto scale = ctx->saved_data["scale"].toTensor();
    const auto& gy = grads[0];  // (..., N)
    auto shape = gy.sizes().vec();
    shape.back() = w.size(1);
    return {stored_linear_grad_input(gy.reshape({-1, w.size(0)}), w, scale).view(shape), torch::Tensor()};
  }
};

}  // namespace

Storage parse_storage(const std::string& name) {
  if (name == "auto" || name == "float32" || name == "fp32") return Storage::kNative;
  if (name == "bfloat16" || name == "bf16") return Storage::kBFloat16;
  if (name == "int8") return Storage::kInt8;
  fail("storage '", name, "' is not supported (expected auto, float32, bfloat16 or int8)");
}

std::string storage_name(Storage s) {
  switch (s) {
    case Storage::kBFloat16: return "bfloat16";
    case Storage::kInt8: return "int8";
    default: return "float32";
  }
}

Storage effective_storage(const std::string& name, torch::Dtype dtype) {
  const Storage s = parse_storage(name);
  return s == Storage::kBFloat16 && dtype == torch::kBFloat16 ? Storage::kNative : s;
}

std::string cpu_path() {
  static const std::string path = choose_path();
  return path;
}

std::pair<torch::Tensor, torch::Tensor> quantize_int8_rows(const torch::Tensor& w) {
  torch::NoGradGuard no_grad;
  auto wf = w.detach().to(torch::kFloat32);                              // (N, K)
  auto scale = wf.abs().amax(1) / 127.0;                                 // (N)
  scale = torch::where(scale > 0, scale, torch::ones_like(scale));
  auto q = (wf / scale.unsqueeze(1)).round().clamp(-127, 127).to(torch::kChar).contiguous();
  return {q, scale.contiguous()};
}

torch::Tensor store_weight(torch::Tensor& w, Storage s) {
  if (s == Storage::kNative) return {};
  torch::NoGradGuard no_grad;
  w.set_requires_grad(false);  // a stored weight is frozen
  if (s == Storage::kBFloat16) {
    w.set_data(w.to(torch::kBFloat16).contiguous());
    return {};
  }
  auto [q, scale] = quantize_int8_rows(w);
  w.set_data(q);
  return scale;
}

torch::Tensor widen(const torch::Tensor& w, const torch::Tensor& scale) {
  auto wf = w.to(torch::kFloat32);
  return scale.defined() && w.scalar_type() == torch::kChar ? wf * scale.unsqueeze(1) : wf;
}

torch::Tensor weight_only_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& scale) {
  if (torch::GradMode::is_enabled() && x.requires_grad()) return WeightOnlyLinearFn::apply(x, WeightRef{w, scale});
  return product(x, w, scale);
}

torch::Tensor stored_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& scale,
                            const torch::Tensor& bias) {
  if (w.scalar_type() == x.scalar_type()) return frozen_linear(x, w, bias);
  auto y = weight_only_linear(x, w, scale);
  return bias.defined() ? y + bias.to(y.scalar_type()) : y;
}

void stored_linear_add_(torch::Tensor& y, const torch::Tensor& x2, const torch::Tensor& w, const torch::Tensor& scale) {
  if (w.scalar_type() == x2.scalar_type()) {
    addmm_2d_(y, x2, w.t());
    return;
  }
  check_operands(x2, w, scale);
  if (x2.size(0) <= kSmallRows) {
    y.add_(product(x2, w, scale));
    return;
  }
  const int64_t N = w.size(0), step = rows_per_chunk(w);
  for (int64_t n0 = 0; n0 < N; n0 += step) {
    const int64_t count = std::min(step, N - n0);
    y.narrow(1, n0, count).addmm_(x2, widen_rows(w, scale, n0, count).t());
  }
}

torch::Tensor stored_linear_grad_input(const torch::Tensor& g2, const torch::Tensor& w, const torch::Tensor& scale) {
  if (w.scalar_type() == g2.scalar_type()) return matmul_2d(g2.contiguous(), w);
  auto gx = torch::zeros({g2.size(0), w.size(1)}, g2.options());  // (M, K)
  stored_linear_grad_input_add_(gx, g2, w, scale);
  return gx;
}

void stored_linear_grad_input_add_(torch::Tensor& gx, const torch::Tensor& g2, const torch::Tensor& w,
                                   const torch::Tensor& scale) {
  if (w.scalar_type() == g2.scalar_type()) {
    addmm_2d_(gx, g2, w);
    return;
  }
  const int64_t N = w.size(0), step = rows_per_chunk(w);
  for (int64_t n0 = 0; n0 < N; n0 += step) {  // gx += sum over row chunks c of g[:, c] W[c, :]
    const int64_t count = std::min(step, N - n0);
    gx.addmm_(g2.narrow(1, n0, count), widen_rows(w, scale, n0, count));
  }
}

torch::Tensor stored_linear_weight(const torch::Tensor& w, const torch::Tensor& scale, torch::Dtype dtype) {
  return w.scalar_type() == dtype ? w : widen(w, scale).to(dtype);
}

torch::Tensor stored_embedding(const torch::Tensor& ids, const torch::Tensor& w, const torch::Tensor& scale,
                               torch::Dtype dtype) {
  auto flat = ids.reshape({-1});                             // (n)
  auto rows = w.index_select(0, flat).to(torch::kFloat32);   // (n, D): only the looked-up rows are widened
  if (w.scalar_type() == torch::kChar) rows = rows * scale.index_select(0, flat).unsqueeze(1);
  auto shape = ids.sizes().vec();
  shape.push_back(w.size(1));
  return rows.to(dtype).view(shape);                         // (..., D)
}

static_assert(KernelMatrix::kFloat32 == kGemmF32 && KernelMatrix::kBFloat16 == kGemmBF16 &&
                  KernelMatrix::kInt8 == kGemmI8,
              "KernelMatrix's formats are the kernel's");

KernelMatrix kernel_matrix(const torch::Tensor& w, const torch::Tensor& scale) {
  if (w.dim() != 2 || !w.is_contiguous() || !w.device().is_cpu())
    fail("kernel matrix: weight ", w.sizes(), " must be a contiguous 2-D CPU tensor");
  KernelMatrix m;
  m.format = format_of(w);
  if (m.format == kGemmI8) {
    if (!scale.defined() || scale.numel() != w.size(0) || scale.scalar_type() != torch::kFloat32 ||
        !scale.is_contiguous())
      fail("kernel matrix: an int8 weight (", w.size(0), " rows) needs one contiguous float32 scale per row");
    m.scale = scale.data_ptr<float>();
  }
  m.data = w.data_ptr();
  m.rows = w.size(0);
  m.cols = w.size(1);
  return m;
}

void kernel_rows(const KernelMatrix& w, const float* x, int64_t M, float* y, int64_t n0, int64_t n1) {
  static const RowsFn fn = rows_fn(cpu_path());
  fn(x, M, w.cols, w.data, w.format, w.scale, y, w.rows, n0, n1);
}

namespace detail {

void small_gemm(const std::string& path, const float* x, int64_t M, int64_t K, const torch::Tensor& w,
                const float* scale, float* y, int64_t N) {
  rows_fn(path)(x, M, K, w.data_ptr(), format_of(w), scale, y, N, 0, N);
}

}  // namespace detail

}  // namespace reglage::kernels
