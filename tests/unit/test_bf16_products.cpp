// bfloat16 products on either path (framework/kernels/bf16_products.h), chosen with ScopedBf16Products so
// that both run on any CPU: the widened path is the float32 sum of the bfloat16 operands rounded once, the
// native one LibTorch's own product; both within one bfloat16 rounding of the exact product, in 2-D products,
// accumulation in place, the frozen linear layer and attention's batched product, values and gradients.
#include <gtest/gtest.h>

#include "framework/kernels/batched_matmul.h"
#include "framework/kernels/bf16_products.h"
#include "framework/kernels/frozen_linear.h"
#include "bf16_gradients.h"
#include "test_util.h"

namespace reglage::kernels {
namespace {

torch::Tensor bf16(const torch::Tensor& x) { return x.to(torch::kBFloat16); }
torch::Tensor f64(const torch::Tensor& x) { return x.to(torch::kFloat64); }

// Largest error of x against the exact e relative to |e| + 1: one rounding to bfloat16 is at most 2^-8.
double rel(const torch::Tensor& x, const torch::Tensor& e) {
  return ((f64(x) - e).abs() / (e.abs() + 1)).max().item<double>();
}
constexpr double kOneRounding = 1.0 / 256;

TEST(Bf16Products, EitherPathIsOneRoundingOfTheExactProduct) {
  torch::manual_seed(21);
  auto a = bf16(torch::randn({64, 96})), b = bf16(torch::randn({96, 80}));
  const auto exact = torch::mm(f64(a), f64(b));  // (64, 80)
  for (bool native : {true, false}) {
    ScopedBf16Products path(native ? Bf16Products::kNative : Bf16Products::kWidened);
    auto y = matmul_2d(a, b);
    ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
    EXPECT_LE(rel(y, exact), kOneRounding) << (native ? "native" : "widened");
    EXPECT_LE(rel(matmul_2d(a.t().contiguous().t(), b), exact), kOneRounding);  // a read through strides
  }
  {
    ScopedBf16Products widened(Bf16Products::kWidened);
    // The float32 sum rounded once: no second rounding of a bfloat16 partial sum.
    EXPECT_TRUE(torch::equal(matmul_2d(a, b), bf16(matmul_2d(a.to(torch::kFloat32), b.to(torch::kFloat32)))));
  }
  ScopedBf16Products native(Bf16Products::kNative);
  EXPECT_TRUE(torch::equal(matmul_2d(a, b), torch::mm(a, b)));  // LibTorch's own product, untouched
}

TEST(Bf16Products, ScopedChoiceRestoresTheOneBefore) {
  const Bf16Products before = bf16_products();
  const Bf16Products other = before == Bf16Products::kNative ? Bf16Products::kWidened : Bf16Products::kNative;
  auto a = bf16(torch::ones({2, 2}));
  {
    ScopedBf16Products outer(other);
    EXPECT_EQ(bf16_products(), other);
    {
      ScopedBf16Products inner(Bf16Products::kWidenedAll);
      EXPECT_EQ(bf16_products(), Bf16Products::kWidenedAll);
      EXPECT_TRUE(widens_bf16(a, a));
      EXPECT_TRUE(widens_bf16_narrow(a, a));
      EXPECT_NE(bf16_products_choice().find("the narrow ones too"), std::string::npos);
    }
    EXPECT_EQ(bf16_products(), other);
    EXPECT_EQ(widens_bf16(a, a), other == Bf16Products::kWidened);  // widened exactly when not native
    EXPECT_FALSE(widens_bf16_narrow(a, a));                           // narrow ones only with kWidenedAll
    EXPECT_FALSE(widens_bf16(a.to(torch::kFloat32), a.to(torch::kFloat32)));  // float32 is never widened
  }
  EXPECT_EQ(bf16_products(), before);
}

// LoRA's rank-r products: LibTorch's own unless every product is widened.
TEST(Bf16Products, NarrowProductsWidenedOnlyWhenAllAre) {
  torch::manual_seed(25);
  auto t = bf16(torch::randn({64, 16})), b = bf16(torch::randn({16, 96})), c0 = bf16(torch::randn({64, 96}));
  const double alpha = 0.5;
  const auto exact = torch::mm(f64(t), f64(b));
  for (auto path : {Bf16Products::kNative, Bf16Products::kWidened, Bf16Products::kWidenedAll}) {
    ScopedBf16Products scoped(path);
    auto y = narrow_mm(t, b);
    auto c = c0.clone();
    narrow_addmm_(c, t, b, alpha);
    EXPECT_LE(rel(y, exact), kOneRounding);
    EXPECT_LE(rel(c, f64(c0) + alpha * exact), kOneRounding);
    if (path == Bf16Products::kWidenedAll) {
      EXPECT_TRUE(torch::equal(y, bf16(matmul_2d(t.to(torch::kFloat32), b.to(torch::kFloat32)))));
    } else {
      EXPECT_TRUE(torch::equal(y, torch::mm(t, b)));
      EXPECT_TRUE(torch::equal(c, c0.addmm(t, b, /*beta=*/1, alpha)));
    }
  }
}

TEST(Bf16Products, AccumulatesInPlaceWithOneRounding) {
  torch::manual_seed(22);
  auto a = bf16(torch::randn({40, 72})), b = bf16(torch::randn({72, 56})), c0 = bf16(torch::randn({40, 56}));
  const double alpha = 0.3;
  const auto exact = f64(c0) + alpha * torch::mm(f64(a), f64(b));
  for (bool native : {true, false}) {
    ScopedBf16Products path(native ? Bf16Products::kNative : Bf16Products::kWidened);
    auto c = c0.clone();
    const void* before = c.data_ptr();
    addmm_2d_(c, a, b.t().contiguous().t(), alpha);  // b read through strides
    EXPECT_EQ(c.data_ptr(), before);                  // in place
    ASSERT_EQ(c.scalar_type(), torch::kBFloat16);
    EXPECT_LE(rel(c, exact), kOneRounding) << (native ? "native" : "widened");
  }
}

TEST(Bf16Products, FrozenLinearValuesAndInputGradient) {
  torch::manual_seed(23);
  auto w = bf16(torch::randn({48, 32})), bias = bf16(torch::randn({48}));
  auto x0 = bf16(torch::randn({5, 7, 32})), up = bf16(torch::randn({5, 7, 48}));
  const auto exact_y = torch::matmul(f64(x0), f64(w).t()) + f64(bias);
  const auto exact_gx = torch::matmul(f64(up), f64(w));
  for (bool native : {true, false}) {
    ScopedBf16Products path(native ? Bf16Products::kNative : Bf16Products::kWidened);
    auto x = x0.clone().requires_grad_(true);
    auto y = frozen_linear(x, w, bias);  // (5, 7, 48)
    y.backward(up);
    EXPECT_LE(rel(y, exact_y), 2 * kOneRounding) << (native ? "native" : "widened");  // product, then + bias
    EXPECT_LE(rel(x.grad(), exact_gx), kOneRounding) << (native ? "native" : "widened");
  }
}

// Entries of 96 x 64 x 80 (past the batched product's one-call-per-batch size) as attention's scores.
TEST(Bf16Products, BatchedProductAndGradients) {
  torch::manual_seed(24);
  auto a0 = bf16(torch::randn({3, 96, 64})), b0 = bf16(torch::randn({3, 64, 80}));
  auto up = bf16(torch::randn({3, 96, 80}));
  const double alpha = 0.125;
  const auto exact = torch::bmm(f64(a0), f64(b0)) * alpha;
  const auto exact_ga = torch::bmm(f64(up), f64(b0).transpose(1, 2)) * alpha;
  const auto exact_gb = torch::bmm(f64(a0).transpose(1, 2), f64(up)) * alpha;
  for (bool native : {true, false}) {
    ScopedBf16Products path(native ? Bf16Products::kNative : Bf16Products::kWidened);
    auto a = a0.clone().requires_grad_(true), b = b0.clone().requires_grad_(true);
    auto y = batched_matmul(a, b, alpha);
    y.backward(up);
    ASSERT_EQ(y.scalar_type(), torch::kBFloat16);
    EXPECT_LE(rel(y, exact), kOneRounding) << (native ? "native" : "widened");
    EXPECT_LE(rel(a.grad(), exact_ga), kOneRounding);
    EXPECT_LE(rel(b.grad(), exact_gb), kOneRounding);
  }
}

TEST(Bf16Products, BadOverrideNamesTheVariable) {
  EXPECT_EQ(detail::parse_bf16_products("native"), Bf16Products::kNative);
  EXPECT_EQ(detail::parse_bf16_products("widened"), Bf16Products::kWidened);
  EXPECT_EQ(detail::parse_bf16_products("widened-all"), Bf16Products::kWidenedAll);
  try {
    detail::parse_bf16_products("fast");
    FAIL() << "no error";
  } catch (const std::exception& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("REGLAGE_BF16_PRODUCTS = 'fast'"), std::string::npos) << m;
    EXPECT_NE(m.find("expected native, widened or widened-all"), std::string::npos) << m;
  }
}

// The whole model (stories260K, LoRA on every linear layer): both bfloat16 paths near float32 and near each
// other, figures printed for the README.
TEST(Bf16Products, ModelGradientsOnEitherPathNearFloat32) {
  const auto e = test::bf16_lora_gradient_errors("stories260K", test::model_260k(), 4, 64);
  test::expect_bf16_paths_near(e, /*each=*/0.05, /*between=*/0.05, /*loss_rel=*/0.02);
  EXPECT_GT(e.between, 0.0);  // the two paths really differ (else one was not taken)
}

}  // namespace
}  // namespace reglage::kernels
