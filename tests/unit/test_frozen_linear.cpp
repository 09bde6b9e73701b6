// Frozen products (framework/kernels/frozen_linear.h) against LibTorch's own: values and the input's
// gradient, for float32 and float64, with and without bias; and a LoRA layer, whose second factor now
// accumulates into the base output in place, against the formula y = x W^T + s (x A^T) B^T with its
// gradients for x, A and B.
#include <gtest/gtest.h>

#include "framework/kernels/frozen_linear.h"
#include "framework/lora/lora_linear.h"

namespace reglage::kernels {
namespace {

double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

// y against y_ref in value, then one random upstream gradient through both: x's gradient against x_ref's.
void expect_same_values_and_input_gradient(const torch::Tensor& y, const torch::Tensor& y_ref, const torch::Tensor& x,
                                           const torch::Tensor& x_ref) {
  ASSERT_EQ(y.sizes(), y_ref.sizes());
  EXPECT_LT(max_diff(y, y_ref), 1e-5);
  auto g = torch::randn(y.sizes());
  (y * g).sum().backward();
  (y_ref * g).sum().backward();
  EXPECT_LT(max_diff(x.grad(), x_ref.grad()), 1e-5);
}

TEST(FrozenLinear, Matmul2dEqualsMm) {
  torch::manual_seed(3);
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    auto a = torch::randn({37, 19}, dtype), b = torch::randn({19, 23}, dtype);
    EXPECT_LT(max_diff(matmul_2d(a, b), torch::mm(a, b)), 1e-5);
    EXPECT_LT(max_diff(matmul_2d(a.t(), a), torch::mm(a.t(), a)), 1e-4);  // strided operands
    EXPECT_EQ(matmul_2d(a, b).sizes(), torch::IntArrayRef({37, 23}));
  }
}

TEST(FrozenLinear, ValuesAndInputGradientEqualLinear) {
  torch::manual_seed(4);
  for (bool with_bias : {false, true})
    for (auto shape : {std::vector<int64_t>{6, 11}, std::vector<int64_t>{2, 3, 11}}) {
      auto w = torch::randn({7, 11}), bias = with_bias ? torch::randn({7}) : torch::Tensor();
      auto x = torch::randn(shape).requires_grad_(true);
      auto x_ref = x.detach().clone().requires_grad_(true);
      auto y = frozen_linear(x, w, bias);
      expect_same_values_and_input_gradient(y, torch::nn::functional::linear(x_ref, w, bias), x, x_ref);
    }
  // A weight being trained takes LibTorch's path and gets its gradient.
  auto w = torch::randn({3, 4}).requires_grad_(true);
  frozen_linear(torch::randn({5, 4}), w, {}).sum().backward();
  ASSERT_TRUE(w.grad().defined());
  EXPECT_EQ(w.grad().sizes(), w.sizes());
}

TEST(FrozenLinear, LoraLayerEqualsItsFormula) {
  torch::manual_seed(5);
  lora::Linear lin(9, 5, /*with_bias=*/false);
  lin->weight.set_requires_grad(false);
  lin->add_adapter("a", 3, 6.0, 0.0, torch::make_generator<at::CPUGeneratorImpl>(1));
  auto& a = lin->adapter("a");
  {
    torch::NoGradGuard no_grad;
    a.B.normal_();  // B starts at zero: give the adapter a value
  }
  auto x = torch::randn({2, 4, 9}).requires_grad_(true);
  auto y = lin->forward(x, {"a"});
  auto A = a.A.detach().clone().requires_grad_(true), B = a.B.detach().clone().requires_grad_(true);
  auto x_ref = x.detach().clone().requires_grad_(true);
  auto y_ref = torch::matmul(x_ref, lin->weight.t()) + 2.0 * torch::matmul(torch::matmul(x_ref, A.t()), B.t());
  expect_same_values_and_input_gradient(y, y_ref, x, x_ref);
  EXPECT_LT(max_diff(a.A.grad(), A.grad()), 1e-4);
  EXPECT_LT(max_diff(a.B.grad(), B.grad()), 1e-4);
  // No gradient wanted: the same values.
  torch::NoGradGuard no_grad;
  EXPECT_LT(max_diff(lin->forward(x.detach(), {"a"}), y_ref), 1e-5);
}

}  // namespace
}  // namespace reglage::kernels
