// Weight-only storage (framework/kernels/weight_only.h): the vector kernels of every path this CPU has against
// a float64 product of the widened weights, a hand-computed case, the chunked large-product path and its
// backward, and whole models stored in bfloat16 / int8 against float32 models holding the same rounded weights.
#include <gtest/gtest.h>

#include "framework/io/model_io.h"
#include "framework/kernels/huge_pages.h"
#include "framework/kernels/weight_only.h"
#include "framework/lora/adapter.h"
#include "test_util.h"

namespace reglage::kernels {
namespace {

// w (N, K) float in `format`: {stored weight, scale or undefined}.
std::pair<torch::Tensor, torch::Tensor> store(const torch::Tensor& w, const std::string& format) {
  if (format == "bfloat16") return {w.to(torch::kBFloat16).contiguous(), {}};
  if (format == "int8") return quantize_int8_rows(w);
  return {w.contiguous(), {}};
}

TEST(WeightOnly, HandComputedBFloat16AndInt8) {
  // bfloat16 holds 1.5, -2, 0.25 and 4 exactly: y = [1*1.5 + 2*-2, 1*0.25 + 2*4] = [-2.5, 8.25].
  auto x = torch::tensor({1.0f, 2.0f}).view({1, 2});
  auto w = torch::tensor({1.5f, -2.0f, 0.25f, 4.0f}).view({2, 2}).to(torch::kBFloat16);
  auto y = weight_only_linear(x, w, {});
  EXPECT_FLOAT_EQ(y[0][0].item<float>(), -2.5f);
  EXPECT_FLOAT_EQ(y[0][1].item<float>(), 8.25f);
  // int8: the row [0.5, -1.27, 0] has scale 1.27 / 127 = 0.01 and values [50, -127, 0].
  auto [q, scale] = quantize_int8_rows(torch::tensor({0.5f, -1.27f, 0.0f}).view({1, 3}));
  EXPECT_NEAR(scale[0].item<float>(), 0.01f, 1e-8);
  EXPECT_EQ(q[0][0].item<int>(), 50);
  EXPECT_EQ(q[0][1].item<int>(), -127);
  EXPECT_EQ(q[0][2].item<int>(), 0);
  // x = [1, 1, 1]: 0.01 * (50 - 127) = -0.77.
  EXPECT_NEAR(weight_only_linear(torch::ones({1, 3}), q, scale).item<float>(), -0.77f, 1e-6);
  // A row of zeros keeps scale 1 (no division by zero).
  EXPECT_EQ(quantize_int8_rows(torch::zeros({1, 4})).second[0].item<float>(), 1.0f);
}

TEST(WeightOnly, EveryPathAndFormatEqualsTheWidenedProduct) {
  torch::manual_seed(5);
  const auto paths = test::kernel_paths_of_this_cpu();
  std::cout << "kernel path chosen on this CPU: " << cpu_path() << "; tested:";
  for (const auto& p : paths) std::cout << " " << p;
  std::cout << "\n";
  // K: tails after 8 and 16 lanes, and none; whole and part cache lines; whole vectors after the last whole line
  // (8 lanes: 48 bfloat16, 100 int8); several int8 lines and a tail (130; AVX-512 reads int8 64 at a time).
  for (int64_t K : {37, 48, 64, 100, 130, 300}) {
    for (int64_t N : {1, 13, 32}) {  // whole 4-row blocks and remainders
      for (int64_t M : {1, 2, 3, 4, 5, 16}) {
        auto x = torch::randn({M, K});
        auto w = torch::randn({N, K});
        for (const std::string format : {"float32", "bfloat16", "int8"}) {
          auto [sw, scale] = store(w, format);
          auto ref = x.to(torch::kFloat64).mm(widen(sw, scale).to(torch::kFloat64).t());  // (M, N)
          for (const auto& path : paths) {
            auto y = torch::empty({M, N});
            detail::small_gemm(path, x.data_ptr<float>(), M, K, sw, scale.defined() ? scale.data_ptr<float>() : nullptr,
                               y.data_ptr<float>(), N);
            const double err = (y.to(torch::kFloat64) - ref).abs().max().item<double>();
            EXPECT_LT(err, 1e-4) << path << " " << format << " M=" << M << " N=" << N << " K=" << K;
          }
          // The public entry (threads, the chosen path) gives the same.
          auto y = weight_only_linear(x, sw, scale);
          EXPECT_LT((y.to(torch::kFloat64) - ref).abs().max().item<double>(), 1e-4) << format;
        }
      }
    }
  }
}

TEST(WeightOnly, LargeProductsInChunksAndTheirGradient) {
  torch::manual_seed(6);
  // N x K above kWidenChunk: the weight is widened in several row chunks; M above kSmallRows: the BLAS path.
  const int64_t N = kWidenChunk / 256 + 7, K = 256, M = kSmallRows + 3;
  auto w = torch::randn({N, K});
  for (const std::string format : {"bfloat16", "int8"}) {
    auto [sw, scale] = store(w, format);
    auto wf = widen(sw, scale);
    auto x = torch::randn({2, M / 2 + 1, K}).requires_grad_(true);  // batched leading dims
    auto gy = torch::randn({2, M / 2 + 1, N});
    auto y = weight_only_linear(x, sw, scale);
    (y * gy).sum().backward();
    auto x_ref = x.detach().clone().requires_grad_(true);
    auto y_ref = torch::matmul(x_ref, wf.t());
    (y_ref * gy).sum().backward();
    EXPECT_LT((y - y_ref).abs().max().item<double>(), 1e-3) << format;
    EXPECT_LT((x.grad() - x_ref.grad()).abs().max().item<double>(), 1e-3) << format;
    EXPECT_EQ(y.sizes(), y_ref.sizes());
  }
}

TEST(WeightOnly, BadOperandsAreRefused) {
  EXPECT_THROW(weight_only_linear(torch::ones({1, 3}), torch::ones({2, 4}, torch::kBFloat16), {}), Error);
  EXPECT_THROW(weight_only_linear(torch::ones({1, 3}), torch::ones({2, 3}, torch::kChar), {}), Error);  // no scale
  EXPECT_THROW(weight_only_linear(torch::ones({1, 3}, torch::kFloat64), torch::ones({2, 3}, torch::kBFloat16), {}),
               Error);
  EXPECT_THROW(parse_storage("int4"), Error);
}

TEST(WeightOnly, GatheredWeightsKeepTheirValuesInOneAlignedBlock) {
  torch::manual_seed(8);
  torch::Tensor a = torch::randn({5, 7}), b = torch::randn({300, 33}).to(torch::kBFloat16),
                c = torch::randint(-127, 128, {3, 4099}).to(torch::kChar), none;
  const auto a0 = a.clone(), b0 = b.clone(), c0 = c.clone();
  const int64_t moved = gather_on_huge_pages({&a, &none, &b, &c});
  // Each at a 4 KiB-aligned offset: 4096 (a: 140 bytes) + 20480 (b: 19800) + 16384 (c: 12297).
  EXPECT_EQ(moved, 4096 + 20480 + 16384);
  EXPECT_FALSE(none.defined());
  for (const auto& [t, t0] : {std::pair{a, a0}, {b, b0}, {c, c0}}) {
    EXPECT_EQ(t.scalar_type(), t0.scalar_type());
    EXPECT_EQ(t.sizes(), t0.sizes());
    EXPECT_TRUE(torch::equal(t, t0));
    EXPECT_NE(t.data_ptr(), t0.data_ptr());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 4096, 0u);
  }
  const auto* base = static_cast<const char*>(a.data_ptr());
  EXPECT_EQ(static_cast<const char*>(b.data_ptr()) - base, 4096);
  EXPECT_EQ(static_cast<const char*>(c.data_ptr()) - base, 4096 + 20480);
  // The block lives as long as any tensor in it does.
  a = torch::Tensor(), b = torch::Tensor();
  EXPECT_TRUE(torch::equal(c, c0));
  EXPECT_EQ(gather_on_huge_pages({&none}), 0);
}

// A float32 copy of the model whose weights hold exactly what the stored model computes with.
model::CausalLM rounded_copy(const std::string& path, Storage s) {
  auto m = io::load_model(path);
  torch::NoGradGuard no_grad;
  auto round = [&](torch::Tensor& w) {
    auto [sw, scale] = store(w, storage_name(s));
    w.copy_(widen(sw, scale));
  };
  for (auto& [name, layer] : m->linear_layers()) round(layer->weight);
  if (m->lm_head) round(m->lm_head->weight);
  round(m->model->embed_tokens->weight);
  return m;
}

TEST(WeightOnly, StoredModelEqualsFloat32ModelWithTheRoundedWeights) {
  const std::string path = test::model_260k();
  auto ids = torch::tensor({1, 403, 407, 261, 300, 288, 35, 400}, torch::kLong).view({2, 4});
  auto full = io::load_model(path);
  torch::Tensor base_logits;
  {
    torch::NoGradGuard no_grad;
    base_logits = full->forward({ids, {}, {}, nullptr, {}});
  }
  for (Storage s : {Storage::kBFloat16, Storage::kInt8}) {
    auto stored = io::load_model(path);
    stored->set_storage(s);
    EXPECT_EQ(stored->storage(), s);
    EXPECT_EQ(stored->dtype(), torch::kFloat32);
    auto ref = rounded_copy(path, s);
    // LoRA with the same seed on both, B made non-zero so the adapter matters; gradients of A and B.
    lora::LoraConfig lc;
    lc.rank = 4;
    lc.targets = {"all-linear"};
    for (auto* m : {&stored, &ref}) {
      lora::add_adapter(*m, "a", lc, 11);
      lora::set_trainable(*m, lora::TrainMode::kLora, "a");
      torch::NoGradGuard no_grad;
      for (auto& t : lora::adapter_tensors(*m, "a"))
        if (t.first.find("lora_B") != std::string::npos) t.second.fill_(0.01);
    }
    auto targets = torch::roll(ids, -1, 1);
    std::vector<torch::Tensor> grads[2];
    torch::Tensor logits[2];
    int i = 0;
    for (auto* m : {&stored, &ref}) {
      auto logp = (*m)->token_logprobs({ids, {}, {}, nullptr, {"a"}}, targets);
      logp.sum().backward();
      for (auto& t : lora::adapter_tensors(*m, "a")) grads[i].push_back(t.second.grad().clone());
      torch::NoGradGuard no_grad;
      logits[i++] = (*m)->forward({ids, {}, {}, nullptr, {"a"}});
    }
    const double logit_err = (logits[0] - logits[1]).abs().max().item<double>();
    EXPECT_LT(logit_err, 1e-4) << storage_name(s);
    double grad_err = 0;
    for (size_t k = 0; k < grads[0].size(); ++k)
      grad_err = std::max(grad_err, (grads[0][k] - grads[1][k]).abs().max().item<double>());
    EXPECT_LT(grad_err, 1e-4) << storage_name(s);
    // How far the storage moves the base model's logits from float32 (reported, loosely bounded).
    torch::NoGradGuard no_grad;
    const double drift = (stored->forward({ids, {}, {}, nullptr, {}}) - base_logits).abs().max().item<double>();
    std::cout << storage_name(s) << ": |stored - same-rounded float32| logits " << logit_err << ", LoRA grads "
              << grad_err << "; |stored - float32 base| logits " << drift << "\n";
    EXPECT_LT(drift, s == Storage::kBFloat16 ? 0.5 : 2.0);
    EXPECT_THROW(stored->set_storage(Storage::kInt8 == s ? Storage::kBFloat16 : Storage::kInt8), Error);
    EXPECT_THROW(lora::merge_adapter(stored, "a", 1.0), Error);
  }
}

}  // namespace
}  // namespace reglage::kernels
