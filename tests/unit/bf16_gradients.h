// One LoRA forward and backward of a real model in float32 and in bfloat16 on both bfloat16 product paths
// (kernels/bf16_products.h): how far each bfloat16 path's adapter gradients and loss sit from float32's, and
// from each other. Shared by the stories260K unit test and the SmolLM2 test.
#pragma once
#include <gtest/gtest.h>

#include <iostream>
#include <string>
#include <vector>

#include "framework/io/model_io.h"
#include "framework/kernels/bf16_products.h"
#include "framework/lora/adapter.h"

namespace reglage::test {

struct Bf16GradientErrors {
  // Relative L2 of the adapters' gradients, all concatenated: each path against float32, and native against
  // widened.
  double native = 0, widened = 0, widened_all = 0, between = 0;
  double loss_float32 = 0, loss_native = 0, loss_widened = 0;
};

// ids (batch, seq) drawn with a fixed seed; rank-8 LoRA on every linear layer, B random (not zero) so the
// adapter matters; loss = the mean negative log-probability of the next token. Prints the figures under `name`.
inline Bf16GradientErrors bf16_lora_gradient_errors(const std::string& name, const std::string& path, int64_t batch,
                                                    int64_t seq) {
  struct Run {
    torch::Tensor grads;  // (all adapter elements) float32
    double loss;
  };
  auto run = [&](torch::Dtype dtype) {
    auto m = io::load_model(path, dtype);
    lora::LoraConfig lc;
    lc.rank = 8;
    lc.targets = {"all-linear"};
    lora::add_adapter(m, "a", lc, 5);
    lora::set_trainable(m, lora::TrainMode::kLora, "a");
    {
      torch::NoGradGuard no_grad;
      auto gen = at::detail::createCPUGenerator(17);
      for (auto& t : lora::adapter_tensors(m, "a"))
        if (t.first.find("lora_B") != std::string::npos) t.second.normal_(0, 0.02, gen);
    }
    auto gen = at::detail::createCPUGenerator(29);
    auto ids = torch::randint(m->config().vocab_size, {batch, seq + 1}, gen, torch::kLong);
    auto inputs = ids.narrow(1, 0, seq), targets = ids.narrow(1, 1, seq);
    auto loss = -m->token_logprobs({inputs, {}, {}, nullptr, {"a"}}, targets).to(torch::kFloat32).mean();
    loss.backward();
    std::vector<torch::Tensor> g;
    for (auto& t : lora::adapter_tensors(m, "a")) g.push_back(t.second.grad().reshape({-1}).to(torch::kFloat32));
    return Run{torch::cat(g), loss.item<double>()};
  };
  auto rel = [](const torch::Tensor& a, const torch::Tensor& b) {
    return ((a - b).norm() / b.norm()).item<double>();
  };
  const Run f32 = run(torch::kFloat32);
  auto run_bf16 = [&](kernels::Bf16Products products) {
    kernels::ScopedBf16Products path(products);
    return run(torch::kBFloat16);
  };
  const Run native = run_bf16(kernels::Bf16Products::kNative), widened = run_bf16(kernels::Bf16Products::kWidened),
            all = run_bf16(kernels::Bf16Products::kWidenedAll);
  const Bf16GradientErrors e{rel(native.grads, f32.grads), rel(widened.grads, f32.grads), rel(all.grads, f32.grads),
                             rel(widened.grads, native.grads), f32.loss, native.loss, widened.loss};
  std::cout << name << " LoRA gradients, relative L2 against float32: native " << e.native << ", widened "
            << e.widened << ", widened-all " << e.widened_all << ", native against widened " << e.between
            << "; loss float32 " << e.loss_float32 << ", native " << e.loss_native << ", widened " << e.loss_widened
            << "\n";
  return e;
}

// Each bfloat16 path within `each` of float32's gradients (relative L2), native within `between` of widened,
// and the losses within `loss_rel` (relative) of float32's.
inline void expect_bf16_paths_near(const Bf16GradientErrors& e, double each, double between, double loss_rel) {
  EXPECT_LT(e.native, each);
  EXPECT_LT(e.widened, each);
  EXPECT_LT(e.widened_all, each);
  EXPECT_LT(e.between, between);
  EXPECT_NEAR(e.loss_native, e.loss_float32, loss_rel * e.loss_float32);
  EXPECT_NEAR(e.loss_widened, e.loss_float32, loss_rel * e.loss_float32);
}

}  // namespace reglage::test
