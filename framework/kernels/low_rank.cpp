#include "framework/kernels/low_rank.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "framework/core/error.h"
#include "framework/kernels/gemm_paths.h"
#include "framework/kernels/weight_only.h"

namespace reglage::kernels {

namespace {

using OuterFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t, int64_t, int64_t,
                         int64_t, int64_t, float, bool);

// The kernel of `path`; cpu_path() only names a path this CPU has (detail::outer_product_on checks).
OuterFn outer_fn(const std::string& path) {
#ifndef REGLAGE_SCALAR_KERNELS_ONLY
  if (path == "avx512") return detail::outer_rows_avx512;
  if (path == "avx2") return detail::outer_rows_avx2;
#endif
  if (path == "scalar") return detail::outer_rows_scalar;
  fail("kernel path '", path, "' (expected avx512, avx2 or scalar)");
}

void check_float_cpu(const char* what, const torch::Tensor& t) {
  if (t.scalar_type() != torch::kFloat32 || !t.device().is_cpu() || t.dim() != 2)
    fail("low-rank product: ", what, " is ", t.scalar_type(), " ", t.sizes(), " on ", t.device(),
         " (expected a 2-D float32 CPU tensor)");
}

void check_outer(const torch::Tensor& c, const torch::Tensor& a, const torch::Tensor& b) {
  check_float_cpu("a", a);
  check_float_cpu("b", b);
  check_float_cpu("c", c);
  if (a.size(1) != b.size(0) || c.size(0) != a.size(0) || c.size(1) != b.size(1))
    fail("low-rank product: c ", c.sizes(), " = a ", a.sizes(), " b ", b.sizes(), " (shapes do not chain)");
  if (b.size(1) > 1 && b.stride(1) != 1) fail("low-rank product: b ", b.sizes(), " needs unit column stride");
  if (!c.is_contiguous()) fail("low-rank product: c ", c.sizes(), " must be contiguous");
}

void check_bf16_operand(const char* what, const torch::Tensor& t) {
  if (!low_rank_bf16_fits(t) || t.dim() != 2 || (t.size(1) > 1 && t.stride(1) != 1))
    fail("low-rank product: ", what, " is ", t.scalar_type(), " ", t.sizes(), " on ", t.device(),
         " (expected a 2-D bfloat16 CPU tensor with unit column stride, on a CPU with avx512_bf16 and no AMX)");
}

// The pairs along K of a (K, r) bfloat16 (pack_pairs_bf16_avx512): ((K + 1) / 2, rp) 32-bit words, rp = r
// rounded up to 16 lanes. Held in an int32 tensor.
struct Pairs {
  torch::Tensor words;
  int64_t r = 0, rp = 0;
  const uint32_t* data() const { return reinterpret_cast<const uint32_t*>(words.data_ptr<int32_t>()); }
};

Pairs pack_pairs(const torch::Tensor& a) {  // a (K, r) bfloat16, unit column stride
  Pairs p;
  p.r = a.size(1);
  p.rp = (p.r + 15) / 16 * 16;
  p.words = torch::empty({(a.size(0) + 1) / 2, p.rp}, a.options().dtype(torch::kInt32));
#ifndef REGLAGE_SCALAR_KERNELS_ONLY
  detail::pack_pairs_bf16_avx512(reinterpret_cast<const uint16_t*>(a.data_ptr<at::BFloat16>()), a.stride(0),
                                 a.size(0), p.r, reinterpret_cast<uint32_t*>(p.words.data_ptr<int32_t>()), p.rp);
#endif
  return p;
}

torch::Tensor narrow_rows_product_bf16(const torch::Tensor& x, const torch::Tensor& f) {
  check_bf16_operand("x", x);
  if (f.dim() != 2 || x.size(1) != f.size(1)) fail("low-rank product: x ", x.sizes(), " against factor ", f.sizes());
  const auto ft = f.t().to(torch::kBFloat16).contiguous();  // (K, r)
  const Pairs fp = pack_pairs(ft);
  const int64_t M = x.size(0), K = x.size(1), r = fp.r;
  auto t = torch::empty({M, r}, x.options().dtype(torch::kFloat32));  // (M, r)
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  float* tp = t.data_ptr<float>();
  // Blocks of 8 rows (the kernel's tile), so that a thread's share is whole tiles.
  at::parallel_for(0, (M + 7) / 8, /*grain_size=*/8, [&](int64_t b0, int64_t b1) {
#ifndef REGLAGE_SCALAR_KERNELS_ONLY
    detail::pair_rows_bf16_avx512(xp, x.stride(0), fp.data(), fp.rp, r, K, tp, r, b0 * 8, std::min(M, b1 * 8));
#endif
  });
  return t;
}

// Rows of c per parallel task: whole tiles on both paths (MR_B = 4 and 6).
constexpr int64_t kRowBlock = 24;
// Columns per task when c has few rows: whole NV_B-vector blocks on both paths (64 and 16 columns).
constexpr int64_t kColBlock = 64;

}  // namespace

bool low_rank_fits(const torch::Tensor& x) {
  static const bool vector_path = cpu_path() != "scalar";
  return vector_path && x.scalar_type() == torch::kFloat32 && x.device().is_cpu();
}

bool low_rank_bf16_fits(const torch::Tensor& x) {
#ifdef REGLAGE_SCALAR_KERNELS_ONLY
  (void)x;
  return false;
#else
  static const bool native = cpu_path() == "avx512" && __builtin_cpu_supports("avx512bf16") &&
                             !__builtin_cpu_supports("amx-bf16");
  return native && x.scalar_type() == torch::kBFloat16 && x.device().is_cpu();
#endif
}

torch::Tensor narrow_rows_product(const torch::Tensor& x, const torch::Tensor& f) {
  if (x.scalar_type() == torch::kBFloat16) return narrow_rows_product_bf16(x, f);
  check_float_cpu("x", x);
  check_float_cpu("f", f);
  if (x.size(1) != f.size(1)) fail("low-rank product: x ", x.sizes(), " against factor ", f.sizes());
  const auto xc = x.contiguous(), fc = f.contiguous();  // fc outlives fm, which points into it
  const int64_t M = xc.size(0), K = xc.size(1), r = fc.size(0);
  auto t = torch::empty({M, r}, xc.options());  // (M, r)
  const KernelMatrix fm = kernel_matrix(fc);
  const float* xp = xc.data_ptr<float>();
  float* tp = t.data_ptr<float>();
  // Blocks of 4 rows (the kernel's input rows per call), so that a thread's share is whole register blocks;
  // 16 rows per call, so that x is read from memory once: the kernel runs every group of f's rows over the
  // rows it is given, and a thread's whole share of x (1,024 rows of 1,536 features, 6 MiB) read once per
  // group of 4 came from memory 4 times (a LoRA SFT step on SmolLM2 spent 1.33 ms per x A^T there, 0.66 hot).
  at::parallel_for(0, (M + 3) / 4, /*grain_size=*/16, [&](int64_t b0, int64_t b1) {
    const int64_t m1 = std::min(M, b1 * 4);
    for (int64_t m = b0 * 4; m < m1; m += 16)
      kernel_rows(fm, xp + m * K, std::min<int64_t>(16, m1 - m), tp + m * r, 0, r);
  });
  return t;
}

void outer_product_(torch::Tensor& c, const torch::Tensor& a, const torch::Tensor& b, double alpha, bool accumulate) {
  check_outer(c, a, b);
  static const OuterFn fn = outer_fn(cpu_path());
  const int64_t M = c.size(0), N = c.size(1), K = a.size(1);
  const float* ap = a.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  float* cp = c.data_ptr<float>();
  const int64_t a_row = a.stride(0), a_col = a.stride(1), ldb = b.stride(0);
  const float al = float(alpha);
  if (M >= 2 * kRowBlock) {
    // One block of rows per call: a long K runs in chunks whose sums the kernel keeps per row (outer_rows).
    at::parallel_for(0, (M + kRowBlock - 1) / kRowBlock, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t blk = b0; blk < b1; ++blk)
        fn(ap, a_row, a_col, bp, ldb, cp, N, K, N, blk * kRowBlock, std::min(M, (blk + 1) * kRowBlock), al, accumulate);
    });
    return;
  }
  at::parallel_for(0, (N + kColBlock - 1) / kColBlock, 1, [&](int64_t b0, int64_t b1) {
    const int64_t n0 = b0 * kColBlock, n1 = std::min(N, b1 * kColBlock);
    fn(ap, a_row, a_col, bp + n0, ldb, cp + n0, N, K, n1 - n0, 0, M, al, accumulate);
  });
}

void outer_product_rows(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb, float* c,
                        int64_t ldc, int64_t K, int64_t N, int64_t m0, int64_t m1, float alpha, bool accumulate) {
  static const OuterFn fn = outer_fn(cpu_path());
  fn(a, a_row, a_col, b, ldb, c, ldc, K, N, m0, m1, alpha, accumulate);
}

torch::Tensor outer_product(const torch::Tensor& a, const torch::Tensor& b, double alpha) {
  auto c = torch::empty({a.size(0), b.size(1)}, a.options());  // (M, N)
  outer_product_(c, a, b, alpha, /*accumulate=*/false);
  return c;
}

torch::Tensor tokens_product_bf16(const torch::Tensor& a, const torch::Tensor& b, double alpha) {
  check_bf16_operand("a", a);
  check_bf16_operand("b", b);
  if (a.size(0) != b.size(0)) fail("low-rank product: a ", a.sizes(), " and b ", b.sizes(), " differ in rows");
  const auto ac = a.contiguous();
  const Pairs ap = pack_pairs(ac);
  const int64_t K = b.size(0), N = b.size(1), r = ap.r;
  auto c = torch::empty({r, N}, b.options().dtype(torch::kFloat32));  // (r, N)
  const auto* bp = reinterpret_cast<const uint16_t*>(b.data_ptr<at::BFloat16>());
  float* cp = c.data_ptr<float>();
  at::parallel_for(0, (N + 15) / 16, /*grain_size=*/1, [&](int64_t b0, int64_t b1) {
#ifndef REGLAGE_SCALAR_KERNELS_ONLY
    detail::pair_reduce_bf16_avx512(ap.data(), ap.rp, r, bp, b.stride(0), K, cp, N, float(alpha), b0 * 16,
                                    std::min(N, b1 * 16));
#endif
  });
  return c;
}

namespace detail {

void outer_product_on(const std::string& path, torch::Tensor& c, const torch::Tensor& a, const torch::Tensor& b,
                      double alpha, bool accumulate) {
  check_outer(c, a, b);
#ifdef REGLAGE_SCALAR_KERNELS_ONLY
  const bool has = path == "scalar";
#else
  const bool has = path == "scalar" ||
                   (path == "avx512" && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) ||
                   (path == "avx2" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
#endif
  if (!has) fail("kernel path ", path, ": this CPU lacks its instructions");
  outer_fn(path)(a.data_ptr<float>(), a.stride(0), a.stride(1), b.data_ptr<float>(), b.stride(0), c.data_ptr<float>(),
                 c.size(1), a.size(1), c.size(1), 0, c.size(0), float(alpha), accumulate);
}

}  // namespace detail

}  // namespace reglage::kernels
