// Rows with padding skip it outside attention (CausalLM::pack_padding, TokenLayout): every valid position
// gets the hidden state, and every trainable tensor the gradient, that computing all slots gives.
#include <gtest/gtest.h>

#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "test_util.h"

namespace reglage::model {
namespace {

struct Pass {
  torch::Tensor hidden;              // (B, T, D)
  std::vector<torch::Tensor> grads;  // the adapter's tensors
};

// Rows of different lengths (prompt then response from column 0, as RL rollouts and SFT batches are laid
// out), one row with left padding and one without any: (B, T) ids and valid.
std::pair<torch::Tensor, torch::Tensor> ragged_rows() {
  torch::manual_seed(5);
  const std::vector<int64_t> lengths = {19, 7, 24, 12};
  auto ids = torch::randint(1, 512, {4, 24}, torch::kLong);
  auto valid = torch::zeros({4, 24}, torch::kBool);
  for (int64_t b = 0; b < 4; ++b) valid[b].narrow(0, 0, lengths[size_t(b)]).fill_(true);
  valid[1].fill_(false);
  valid[1].narrow(0, 24 - 7, 7).fill_(true);  // left padding
  return {ids, valid};
}

Pass run(torch::Dtype dtype, bool pack, bool grad, bool checkpoint) {
  auto m = io::load_model(test::model_260k(), dtype);
  lora::LoraConfig lc;
  lc.rank = 4;
  lc.targets = {"all-linear"};
  lora::add_adapter(m, "a", lc, 3);
  lora::set_trainable(m, lora::TrainMode::kLora, "a");
  std::vector<torch::Tensor> params;
  for (auto& [name, t] : lora::adapter_tensors(m, "a")) {
    torch::NoGradGuard no_grad;
    if (name.find("lora_B") != std::string::npos) t.normal_(0, 0.05);  // B = 0 would hide A's gradient
    params.push_back(t);
  }
  m->pack_padding = pack;
  m->checkpoint_layers = checkpoint;
  auto [ids, valid] = ragged_rows();
  torch::AutoGradMode mode(grad);
  Pass p;
  p.hidden = m->hidden({ids, {}, valid, nullptr, {"a"}});
  if (grad) {
    // A loss over valid positions only, with weights that differ per position.
    auto w = torch::linspace(-1, 1, p.hidden.numel(), p.hidden.options()).view(p.hidden.sizes());
    (p.hidden * w * valid.unsqueeze(-1).to(p.hidden.scalar_type())).sum().backward();
    for (auto& t : params) p.grads.push_back(t.grad().clone());
  }
  return p;
}

TEST(PaddingSkip, ValidPositionsGetTheStatesAndGradientsOfTheFullComputation) {
  const auto valid = ragged_rows().second.unsqueeze(-1);  // (B, T, 1)
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    const double tol = dtype == torch::kFloat64 ? 1e-12 : 1e-5;
    for (bool grad : {false, true}) {
      for (bool checkpoint : {false, true}) {
        if (checkpoint && !grad) continue;
        const std::string what = std::string(dtype == torch::kFloat64 ? "float64" : "float32") +
                                 (grad ? " with gradients" : " no grad") + (checkpoint ? ", checkpointed" : "");
        const Pass full = run(dtype, false, grad, checkpoint), packed = run(dtype, true, grad, checkpoint);
        auto at_valid = [&](const torch::Tensor& h) { return h.masked_fill(valid.logical_not(), 0); };
        const double scale = full.hidden.abs().max().item<double>();
        EXPECT_LT(test::max_abs_diff(at_valid(full.hidden), at_valid(packed.hidden)), tol * scale) << what;
        // The packed call really skipped the padding: its padding slots hold zeros, the full call's do not.
        EXPECT_EQ(packed.hidden.masked_select(valid.logical_not()).abs().max().item<double>(), 0.0) << what;
        EXPECT_GT(full.hidden.masked_select(valid.logical_not()).abs().max().item<double>(), 0.1) << what;
        ASSERT_EQ(full.grads.size(), packed.grads.size());
        double largest = 0;
        for (size_t i = 0; i < full.grads.size(); ++i) {
          const double g = full.grads[i].abs().max().item<double>();
          largest = std::max(largest, g);
          EXPECT_LT(test::max_abs_diff(full.grads[i], packed.grads[i]), tol * std::max(g, 1.0)) << what << " grad " << i;
        }
        if (grad) {
          EXPECT_GT(largest, 1e-3) << what;
        }
      }
    }
  }
}

TEST(PaddingSkip, RowsWithoutPaddingTakeTheFullPath) {
  // Under 1/16 of the slots padding: nothing is skipped (the padding slot keeps its computed state).
  auto m = io::load_model(test::model_260k());
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(1, 512, {2, 16}, torch::kLong);
  auto valid = torch::ones({2, 16}, torch::kBool);
  valid[1][15] = false;
  auto h = m->hidden({ids, {}, valid, nullptr, {}});
  EXPECT_GT(h[1][15].abs().max().item<double>(), 0.1);
}

}  // namespace
}  // namespace reglage::model
