// kernels::batched_matmul (attention's products) against torch::bmm: values and both gradients for float64 and
// float32 with transposed (strided) operands, float32's row tasks on one and two threads, values for bfloat16
// and for small entries (left to torch::bmm), the no-grad path, and the scale alpha.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include "framework/kernels/batched_matmul.h"

namespace reglage::kernels {
namespace {

TEST(BatchedMatmul, EqualsBmmInValueAndGradient) {
  torch::manual_seed(7);
  const int threads = at::get_num_threads();
  at::set_num_threads(2);
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    const double tol = dtype == torch::kFloat64 ? 1e-12 : 1e-4;
    const int64_t G = 3, M = 64, K = 65, N = 70;  // 291,200 multiply-adds per entry: the threaded path
    auto a0 = torch::randn({G, M, K}, dtype);
    auto b0 = torch::randn({G, N, K}, dtype);  // used transposed: a strided operand, as attention's keys
    auto up = torch::randn({G, M, N}, dtype);  // an arbitrary upstream gradient
    auto ar = a0.clone().requires_grad_(true), br = b0.clone().requires_grad_(true);
    auto ref = torch::bmm(ar, br.transpose(1, 2));
    (ref * up).sum().backward();
    auto a = a0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
    auto got = batched_matmul(a, b.transpose(1, 2));
    ASSERT_EQ(got.sizes(), ref.sizes());
    EXPECT_LT((got - ref).abs().max().item<double>(), tol);
    (got * up).sum().backward();
    EXPECT_LT((a.grad() - ar.grad()).abs().max().item<double>(), tol);
    EXPECT_LT((b.grad() - br.grad()).abs().max().item<double>(), tol);
    {
      torch::NoGradGuard no_grad;
      EXPECT_LT((batched_matmul(a0, b0.transpose(1, 2)) - ref).abs().max().item<double>(), tol);
    }
  }
  // Small entries go to torch::bmm: the same values.
  auto sa = torch::randn({4, 5, 8}), sb = torch::randn({4, 8, 6});
  EXPECT_TRUE(torch::equal(batched_matmul(sa, sb), torch::bmm(sa, sb)));
  // bfloat16: the same product up to bfloat16 rounding of the result.
  auto a = torch::randn({3, 8, 64}).to(torch::kBFloat16), b = torch::randn({3, 64, 32}).to(torch::kBFloat16);
  auto ref = torch::bmm(a.to(torch::kFloat32), b.to(torch::kFloat32));
  auto got = batched_matmul(a, b).to(torch::kFloat32);
  EXPECT_LT(((got - ref).abs() / (ref.abs() + 1)).max().item<double>(), 1e-2);
  // Shapes that do not fit are left to torch::bmm, which reports them.
  EXPECT_THROW(batched_matmul(torch::randn({2, 3, 4}), torch::randn({2, 5, 6})), c10::Error);
  at::set_num_threads(threads);
}

// float32 on a vector path takes the outer-product kernel over tasks of (entry, 192 rows): entries of two tasks
// (the second short), k past the kernel's chunks, a transposed b (made row-major) and a transposed a (read in
// place): within float32 rounding of float64, and the same bits on one thread and on two.
TEST(BatchedMatmul, Float32RowTasksNearFloat64AndSameOnAnyThreads) {
  torch::manual_seed(9);
  const int threads = at::get_num_threads();
  const int64_t G = 3, M = 200, K = 130, N = 70;
  auto a = torch::randn({G, K, M}).transpose(1, 2);  // (G, M, K) through strides
  auto b = torch::randn({G, N, K}).transpose(1, 2);  // (G, K, N), strided columns
  const auto want = torch::bmm(a.to(torch::kFloat64), b.to(torch::kFloat64)) * 0.125;
  at::set_num_threads(1);
  const auto one = batched_matmul(a, b, 0.125);
  at::set_num_threads(2);
  const auto two = batched_matmul(a, b, 0.125);
  at::set_num_threads(threads);
  EXPECT_LT((one.to(torch::kFloat64) - want).abs().max().item<double>(), 1e-4);
  EXPECT_TRUE(torch::equal(one, two));
}

// alpha scales the product and both gradients (attention's 1/sqrt(Dh)), on the threaded and torch::bmm paths.
TEST(BatchedMatmul, AlphaScalesProductAndGradients) {
  torch::manual_seed(8);
  for (int64_t M : {64, 4}) {  // 64 x 64 x 64: the threaded path; 4 rows: torch::bmm
    auto a0 = torch::randn({2, M, 64}, torch::kFloat64), b0 = torch::randn({2, 64, 64}, torch::kFloat64);
    auto up = torch::randn({2, M, 64}, torch::kFloat64);
    auto ar = a0.clone().requires_grad_(true), br = b0.clone().requires_grad_(true);
    auto ref = torch::bmm(ar, br) * 0.3;
    (ref * up).sum().backward();
    auto a = a0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
    auto got = batched_matmul(a, b, 0.3);
    EXPECT_LT((got - ref).abs().max().item<double>(), 1e-12);
    (got * up).sum().backward();
    EXPECT_LT((a.grad() - ar.grad()).abs().max().item<double>(), 1e-12);
    EXPECT_LT((b.grad() - br.grad()).abs().max().item<double>(), 1e-12);
  }
}

// bfloat16 with alpha: one rounding of alpha * (a b) in forward and of alpha * (g b^T), alpha * (a^T g) in
// backward. With alpha a power of two that is bit for bit bmm followed by the scale (attention with Dh = 64);
// otherwise within one bfloat16 rounding of the float32 product.
TEST(BatchedMatmul, BFloat16AlphaInsideTheProduct) {
  torch::manual_seed(9);
  auto a0 = torch::randn({3, 48, 64}).to(torch::kBFloat16), b0 = torch::randn({3, 64, 40}).to(torch::kBFloat16);
  auto up = torch::randn({3, 48, 40}).to(torch::kBFloat16);
  for (double alpha : {0.125, 0.3}) {
    auto ar = a0.clone().requires_grad_(true), br = b0.clone().requires_grad_(true);
    auto ref = torch::bmm(ar, br).mul(alpha);  // the operator chain: two roundings
    ref.backward(up);
    auto a = a0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
    auto got = batched_matmul(a, b, alpha);
    got.backward(up);
    ASSERT_EQ(got.scalar_type(), torch::kBFloat16);
    if (alpha == 0.125) {
      EXPECT_TRUE(torch::equal(got, ref));
      EXPECT_TRUE(torch::equal(a.grad(), ar.grad()));
      EXPECT_TRUE(torch::equal(b.grad(), br.grad()));
    }
    auto exact = torch::bmm(a0.to(torch::kFloat64), b0.to(torch::kFloat64)) * alpha;
    auto exact_ga = torch::bmm(up.to(torch::kFloat64), b0.to(torch::kFloat64).transpose(1, 2)) * alpha;
    auto rel = [](const torch::Tensor& x, const torch::Tensor& e) {
      return ((x.to(torch::kFloat64) - e).abs() / (e.abs() + 1)).max().item<double>();
    };
    EXPECT_LE(rel(got, exact), 1.0 / 256);  // one rounding to bfloat16 (8 bits): at most 2^-8 relative
    EXPECT_LE(rel(a.grad(), exact_ga), 1.0 / 256);
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(batched_matmul(a0, b0, alpha), got.detach()));
  }
}

}  // namespace
}  // namespace reglage::kernels
