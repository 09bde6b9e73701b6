// The low-rank kernels (framework/kernels/low_rank.h): the outer-product kernel on every path this CPU has and
// the rows-times-factor product against float64 products, a hand-computed case, the same bits on one and two
// threads, and one-line refusals of operands they cannot take; the same for the bfloat16 pair kernels where
// the CPU has avx512_bf16.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "framework/kernels/low_rank.h"
#include "test_util.h"

namespace reglage::kernels {
namespace {

// |got - want| <= 1e-6 (1 + K) max(1, |want|max): float32 sums of K products against float64.
void expect_near(const torch::Tensor& got, const torch::Tensor& want, int64_t K, const std::string& what) {
  const double err = (got.to(torch::kFloat64) - want).abs().max().item<double>();
  const double size = std::max(1.0, want.abs().max().item<double>());
  EXPECT_LE(err, 1e-6 * double(1 + K) * size) << what << ": max error " << err;
}

// run()'s products on one thread and on two: the same bits (each element sums in an order the split does not
// change).
void expect_same_on_one_and_two_threads(const std::function<std::vector<torch::Tensor>()>& run) {
  const int before = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = run();
  at::set_num_threads(2);
  const auto two = run();
  at::set_num_threads(before);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(torch::equal(one[i], two[i])) << "product " << i;
}

// The message of what f throws, or "no error".
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return std::string(e.what());
  }
  return std::string("no error");
}

TEST(LowRank, HandComputedOuterProduct) {
  // [[1, 2], [3, 4]] [[1, 0, 2], [0, 1, 3]] = [[1, 2, 8], [3, 4, 18]]; alpha 0.5 halves it; accumulating adds
  // it to what c holds.
  auto a = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).view({2, 2});
  auto b = torch::tensor({1.0f, 0.0f, 2.0f, 0.0f, 1.0f, 3.0f}).view({2, 3});
  auto want = torch::tensor({0.5f, 1.0f, 4.0f, 1.5f, 2.0f, 9.0f}).view({2, 3});
  for (const auto& path : test::kernel_paths_of_this_cpu()) {
    auto c = torch::full({2, 3}, 7.0f);
    detail::outer_product_on(path, c, a, b, 0.5, /*accumulate=*/false);
    EXPECT_TRUE(torch::equal(c, want)) << path;
    detail::outer_product_on(path, c, a, b, 0.5, /*accumulate=*/true);
    EXPECT_TRUE(torch::equal(c, want * 2)) << path;
  }
  EXPECT_TRUE(torch::equal(outer_product(a, b, 0.5), want));
}

TEST(LowRank, OuterProductOnEveryPathEqualsFloat64) {
  torch::manual_seed(3);
  for (const auto& path : test::kernel_paths_of_this_cpu()) {
    // M: below, at and past the row tiles (4 on AVX-512, 6 on AVX2) and the threads' row blocks (24); N: single
    // columns, single vectors, whole column blocks (64 on AVX-512, 16 on AVX2) and remainders; K: none, the rank,
    // a few hundred tokens and past the kernels' chunks of k (128 on AVX-512, 512 on AVX2, 2,048 scalar).
    for (int64_t M : {1, 5, 16, 50}) {
      for (int64_t N : {1, 7, 16, 64, 100, 130}) {
        for (int64_t K : {0, 1, 16, 37, 300, 2100}) {
          for (bool transposed : {false, true}) {  // a read in place through a transpose's strides
            auto a = transposed ? torch::randn({K, M}).t() : torch::randn({M, K});
            auto b = torch::randn({K, N});
            auto c0 = torch::randn({M, N});
            const auto want = torch::matmul(a.to(torch::kFloat64), b.to(torch::kFloat64)) * 0.75;
            const std::string what = path + " M=" + std::to_string(M) + " N=" + std::to_string(N) +
                                     " K=" + std::to_string(K) + (transposed ? " a^T" : "");
            auto c = torch::empty({M, N});
            detail::outer_product_on(path, c, a, b, 0.75, /*accumulate=*/false);
            expect_near(c, want, K, what);
            c = c0.clone();
            detail::outer_product_on(path, c, a, b, 0.75, /*accumulate=*/true);
            expect_near(c, want + c0.to(torch::kFloat64), K, what + " accumulated");
          }
        }
      }
    }
  }
}

TEST(LowRank, ChunkedTokensSumEachElementInOrder) {
  // A K past the chunks of k: each element is still one fused multiply-add after another in k's order, scaled
  // once (vfmadd231ps rounds as std::fmaf does), the same bits as an unchunked sum; N = 100 ends in a partial
  // vector on both widths.
  torch::manual_seed(8);
  const int64_t M = 7, N = 100, K = 1100;
  auto a = torch::randn({K, M}).t();  // a transpose, read in place, as the adapters' gradients read t^T
  auto b = torch::randn({K, N});
  auto want = torch::empty({M, N});
  const auto A = a.accessor<float, 2>(), B = b.accessor<float, 2>();
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      float acc = 0;
      for (int64_t k = 0; k < K; ++k) acc = std::fmaf(A[m][k], B[k][n], acc);
      want[m][n] = acc * 0.5f;
    }
  for (const auto& path : test::kernel_paths_of_this_cpu()) {
    if (path == "scalar") continue;  // its multiply-add is the compiler's to fuse or not
    auto c = torch::empty({M, N});
    detail::outer_product_on(path, c, a, b, 0.5, /*accumulate=*/false);
    EXPECT_TRUE(torch::equal(c, want)) << path;  // the last columns too (one masked vector)
  }
}

TEST(LowRank, RowsTimesFactorEqualsFloat64) {
  torch::manual_seed(4);
  for (int64_t M : {1, 3, 50, 301})
    for (int64_t r : {1, 4, 16, 19})
      for (int64_t K : {37, 576}) {
        auto x = torch::randn({M, K}), f = torch::randn({r, K});
        const auto want = torch::matmul(x.to(torch::kFloat64), f.to(torch::kFloat64).t());
        const std::string what = "M=" + std::to_string(M) + " r=" + std::to_string(r) + " K=" + std::to_string(K);
        expect_near(narrow_rows_product(x, f), want, K, what);
        // Operands given as transposes (copied to contiguous inside): the same values.
        const auto ft = f.t().contiguous().t(), xt = x.t().contiguous().t();
        EXPECT_TRUE(torch::equal(narrow_rows_product(xt, ft), narrow_rows_product(x, f))) << what << " transposed";
      }
}

TEST(LowRank, SameBitsOnOneAndTwoThreads) {
  torch::manual_seed(6);
  auto x = torch::randn({300, 96}), f = torch::randn({16, 96});
  auto t_wide = torch::randn({300, 16}), b_wide = torch::randn({16, 200});  // rows split: (300, 200)
  auto g = torch::randn({300, 130});                                          // columns split: (16, 130)
  expect_same_on_one_and_two_threads([&] {
    return std::vector<torch::Tensor>{narrow_rows_product(x, f), outer_product(t_wide, b_wide, 2.0),
                                      outer_product(t_wide.t(), g, 0.5)};
  });
}

TEST(LowRank, RefusesOperandsItCannotTake) {
  auto a = torch::randn({4, 3}), b = torch::randn({3, 5});
  auto c = torch::empty({4, 5});
  EXPECT_NE(error_of([&] { outer_product_(c, a.to(torch::kFloat64), b, 1.0, false); }).find("expected a 2-D float32 CPU tensor"),
            std::string::npos);
  EXPECT_NE(error_of([&] { outer_product(a, torch::randn({4, 5}), 1.0); }).find("shapes do not chain"), std::string::npos);
  EXPECT_NE(error_of([&] { outer_product(a, torch::randn({5, 3}).t(), 1.0); }).find("unit column stride"),
            std::string::npos);
  auto strided = torch::empty({5, 4}).t();
  EXPECT_NE(error_of([&] { outer_product_(strided, a, b, 1.0, false); }).find("must be contiguous"), std::string::npos);
  EXPECT_NE(error_of([&] { narrow_rows_product(a, torch::randn({2, 4})); }).find("against factor"), std::string::npos);
}

// The bfloat16 pair kernels need avx512_bf16; elsewhere the LoRA layer keeps oneDNN's products, and these skip.
bool bf16_kernels_here() { return low_rank_bf16_fits(torch::empty({1}, torch::kBFloat16)); }
constexpr const char* kNoBf16Kernels = "this CPU lacks avx512_bf16 (or has AMX): the bfloat16 kernels are not used";

// Values exact in bfloat16, so that float64 products of them are the reference.
torch::Tensor bf16_randn(std::vector<int64_t> sizes) { return torch::randn(sizes).to(torch::kBFloat16); }

TEST(LowRank, Bf16HandComputed) {
  if (!bf16_kernels_here()) GTEST_SKIP() << kNoBf16Kernels;
  // x [[1, 2, 3], [4, 5, 6]] f^T with f [[1, 0, 1], [0.5, 1, 0]] = [[4, 2.5], [10, 7]] (K = 3: a pair and an odd
  // last); a^T b with a = x^T (3, 2), b (3, 1) = [1, 1, 2]: [[1 + 2 + 6], [4 + 5 + 12]] = [[9], [21]], alpha 0.5.
  auto x = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}).view({2, 3}).to(torch::kBFloat16);
  auto f = torch::tensor({1.0f, 0.0f, 1.0f, 0.5f, 1.0f, 0.0f}).view({2, 3});
  EXPECT_TRUE(torch::equal(narrow_rows_product(x, f), torch::tensor({4.0f, 2.5f, 10.0f, 7.0f}).view({2, 2})));
  auto b = torch::tensor({1.0f, 1.0f, 2.0f}).view({3, 1}).to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(tokens_product_bf16(x.t().contiguous(), b, 0.5), torch::tensor({4.5f, 10.5f}).view({2, 1})));
}

TEST(LowRank, Bf16ProductsEqualFloat64) {
  if (!bf16_kernels_here()) GTEST_SKIP() << kNoBf16Kernels;
  torch::manual_seed(7);
  // r: under, at and past one 16-lane block; K: odd and even, one pair to hundreds; M and N: under, at and past
  // the tiles (8 rows, 16 columns) and past the threads' blocks.
  for (int64_t r : {1, 5, 16, 20})
    for (int64_t K : {1, 2, 37, 576}) {
      for (int64_t M : {1, 9, 50}) {
        auto x = bf16_randn({M, K});
        auto f = torch::randn({r, K});  // float32: rounded to bfloat16 inside
        const auto want = torch::matmul(x.to(torch::kFloat64), f.to(torch::kBFloat16).to(torch::kFloat64).t());
        const std::string what = "rows M=" + std::to_string(M) + " r=" + std::to_string(r) + " K=" + std::to_string(K);
        const auto t = narrow_rows_product(x, f);
        EXPECT_EQ(t.scalar_type(), torch::kFloat32) << what;
        expect_near(t, want, K, what);
      }
      for (int64_t N : {1, 16, 50}) {
        // b as a column slice of a wider matrix: row stride past its width.
        auto a = bf16_randn({K, r}), b = bf16_randn({K, N + 3}).narrow(1, 2, N);
        const auto want = torch::matmul(a.to(torch::kFloat64).t(), b.to(torch::kFloat64)) * 0.25;
        const std::string what =
            "tokens N=" + std::to_string(N) + " r=" + std::to_string(r) + " K=" + std::to_string(K);
        expect_near(tokens_product_bf16(a, b, 0.25), want, K, what);
      }
    }
}

TEST(LowRank, Bf16SameBitsOnOneAndTwoThreads) {
  if (!bf16_kernels_here()) GTEST_SKIP() << kNoBf16Kernels;
  torch::manual_seed(8);
  auto x = bf16_randn({300, 96}), f = torch::randn({16, 96}), a = bf16_randn({300, 16}), b = bf16_randn({300, 130});
  expect_same_on_one_and_two_threads(
      [&] { return std::vector<torch::Tensor>{narrow_rows_product(x, f), tokens_product_bf16(a, b, 2.0)}; });
}

TEST(LowRank, Bf16RefusesOperandsItCannotTake) {
  auto a = torch::randn({4, 3}).to(torch::kBFloat16), b = torch::randn({4, 5}).to(torch::kBFloat16);
  // float32 operands are refused on every CPU (and bfloat16 ones where the kernels are not used).
  const auto refused_float32 = error_of([&] { tokens_product_bf16(a.to(torch::kFloat32), b, 1.0); });
  EXPECT_NE(refused_float32.find("expected a 2-D bfloat16 CPU tensor"), std::string::npos) << refused_float32;
  if (!bf16_kernels_here()) return;
  EXPECT_NE(error_of([&] { tokens_product_bf16(a, b.narrow(0, 0, 3), 1.0); }).find("differ in rows"), std::string::npos);
  const auto b_transposed = torch::randn({5, 4}).to(torch::kBFloat16).t();  // (4, 5), column stride 4
  EXPECT_NE(error_of([&] { tokens_product_bf16(a, b_transposed, 1.0); }).find("unit column stride"), std::string::npos);
  EXPECT_NE(error_of([&] { narrow_rows_product(a, torch::randn({2, 4})); }).find("against factor"), std::string::npos);
}

}  // namespace
}  // namespace reglage::kernels
