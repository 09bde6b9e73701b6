// Activation checkpointing (CausalLM::checkpoint_layers) gives the same loss and gradients as keeping the
// activations, for LoRA with dropout (the recomputation replays the random state) and for full training; and
// packed segments (ForwardInput::segments) give each packed row the hidden states it has alone.
#include <gtest/gtest.h>

#include <set>

#include "framework/data/sft_data.h"
#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "test_util.h"

namespace reglage::model {
namespace {

// Whether the autograd graph behind t holds a checkpointed layer's node (its name carries the type's).
bool graph_has_checkpoint(const torch::Tensor& t) {
  std::vector<torch::autograd::Node*> todo = {t.grad_fn().get()};
  std::set<torch::autograd::Node*> seen;
  while (!todo.empty()) {
    auto* n = todo.back();
    todo.pop_back();
    if (n == nullptr || !seen.insert(n).second) continue;
    if (n->name().find("CheckpointedLayer") != std::string::npos) return true;
    for (const auto& e : n->next_edges()) todo.push_back(e.function.get());
  }
  return false;
}

struct Outcome {
  bool checkpointed = false;
  double loss = 0;
  std::vector<torch::Tensor> grads;
  torch::Tensor rng_after;  // the random state after forward + backward
};

Outcome train_step(bool checkpoint, bool lora_mode) {
  auto m = io::load_model(test::model_260k());
  m->train();
  torch::manual_seed(17);  // B's values, the ids and the dropout masks
  std::vector<torch::Tensor> params;
  model::AdapterSet active;
  if (lora_mode) {
    lora::LoraConfig lc;
    lc.rank = 4;
    lc.dropout = 0.3;  // drawn in forward; the recomputation must draw the same masks
    lc.targets = {"all-linear"};
    lora::add_adapter(m, "a", lc, 3);
    lora::set_trainable(m, lora::TrainMode::kLora, "a");
    for (auto& [name, t] : lora::adapter_tensors(m, "a")) {
      torch::NoGradGuard no_grad;
      if (name.find("lora_B") != std::string::npos) t.normal_(0, 0.02);  // B = 0 would hide A's gradient
      params.push_back(t);
    }
    active = {"a"};
  } else {
    lora::set_trainable(m, lora::TrainMode::kFull, "");
    for (auto& p : m->parameters())
      if (p.requires_grad()) params.push_back(p);
  }
  m->checkpoint_layers = checkpoint;
  auto ids = torch::randint(1, 512, {3, 24}, torch::kLong);
  auto targets = torch::roll(ids, -1, 1);
  auto valid = torch::ones({3, 24}, torch::kBool);
  valid[2].narrow(0, 0, 5).fill_(false);  // left padding in one row
  auto logp = m->token_logprobs({ids, {}, valid, nullptr, active}, targets);
  auto loss = -logp.mean();
  Outcome o;
  o.checkpointed = graph_has_checkpoint(loss);
  loss.backward();
  o.loss = loss.item<double>();
  for (auto& p : params) o.grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  o.rng_after = at::detail::getDefaultCPUGenerator().get_state();
  return o;
}

TEST(LayerRecompute, SameLossAndGradientsAsKeepingActivations) {
  for (bool lora_mode : {true, false}) {
    const Outcome kept = train_step(false, lora_mode), recomputed = train_step(true, lora_mode);
    EXPECT_FALSE(kept.checkpointed);
    EXPECT_TRUE(recomputed.checkpointed);
    EXPECT_NEAR(kept.loss, recomputed.loss, 1e-6) << (lora_mode ? "lora" : "full");
    ASSERT_EQ(kept.grads.size(), recomputed.grads.size());
    double worst = 0, largest = 0;
    for (size_t i = 0; i < kept.grads.size(); ++i) {
      worst = std::max(worst, (kept.grads[i] - recomputed.grads[i]).abs().max().item<double>());
      largest = std::max(largest, kept.grads[i].abs().max().item<double>());
    }
    EXPECT_GT(largest, 1e-4);  // gradients reach every parameter list (not all zero)
    EXPECT_LT(worst, 1e-6) << (lora_mode ? "lora" : "full");
    // Later random draws are unchanged by the replay.
    EXPECT_TRUE(torch::equal(kept.rng_after, recomputed.rng_after));
  }
}

TEST(PackedSegments, EachSegmentSeesOnlyItself) {
  auto m = io::load_model(test::model_260k());
  torch::NoGradGuard no_grad;
  auto a = torch::tensor({1, 403, 407, 261, 300}, torch::kLong), b = torch::tensor({1, 288, 35, 400}, torch::kLong);
  auto alone_a = m->hidden({a.view({1, -1}), {}, {}, nullptr, {}}), alone_b = m->hidden({b.view({1, -1}), {}, {}, nullptr, {}});
  auto packed = torch::cat({a, b}).view({1, -1});                                    // (1, 9)
  auto positions = torch::cat({torch::arange(5), torch::arange(4)}).view({1, -1});   // restart per segment
  auto segments = torch::cat({torch::zeros({5}), torch::ones({4})}).to(torch::kLong).view({1, -1});
  ForwardInput in{packed, positions, {}, nullptr, {}};
  in.segments = segments;
  auto h = m->hidden(in);  // (1, 9, D)
  EXPECT_LT((h.narrow(1, 0, 5) - alone_a).abs().max().item<double>(), 1e-5);
  EXPECT_LT((h.narrow(1, 5, 4) - alone_b).abs().max().item<double>(), 1e-5);
  // Without segments the second row attends to the first: different states.
  EXPECT_GT((m->hidden({packed, positions, {}, nullptr, {}}).narrow(1, 5, 4) - alone_b).abs().max().item<double>(), 1e-3);
}

TEST(PackedSegments, PackedBatchHasTheSameTargetsAndLossAsPaddedRows) {
  data::SftDataset d;
  d.path = "rows.jsonl";
  torch::manual_seed(8);
  for (int64_t len : {7, 3, 12, 5, 9, 4}) {  // first fit into 20: [7, 3, 5, 4], [12], [9]
    data::SftExample ex;
    auto ids = torch::randint(2, 512, {len}, torch::kLong);
    ex.ids.assign(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + len);
    ex.loss.assign(size_t(len), 0);
    for (int64_t t = len / 2; t < len; ++t) ex.loss[size_t(t)] = 1;  // the second half is the completion
    d.rows.push_back(ex);
  }
  const std::vector<int64_t> rows = {0, 1, 2, 3, 4, 5};
  auto padded = data::collate(d, rows, 0);
  auto packed = data::collate_packed(d, rows, 0, 20);
  EXPECT_EQ(packed.ids.size(0), 3);
  EXPECT_EQ(packed.ids.size(1), 19);
  EXPECT_EQ(packed.target_tokens, padded.target_tokens);
  EXPECT_EQ(packed.valid.sum().item<int64_t>(), 40);
  // The second row (3 tokens) sits right after the first (7) with positions restarting and its own segment.
  EXPECT_EQ(packed.positions[0][7].item<int64_t>(), 0);
  EXPECT_EQ(packed.segments[0][7].item<int64_t>(), 1);
  EXPECT_EQ(packed.targets[0][6].item<int64_t>(), -100);  // no target across the end of a row

  auto m = io::load_model(test::model_260k());
  torch::NoGradGuard no_grad;
  auto loss_of = [&](const data::SftBatch& b) {
    ForwardInput in{b.ids, b.positions, b.valid, nullptr, {}};
    in.segments = b.segments;
    return -m->token_logprobs(in, b.targets).sum().item<double>();
  };
  EXPECT_NEAR(loss_of(packed), loss_of(padded), 1e-4 * std::abs(loss_of(padded)));
  EXPECT_THROW(data::collate_packed(d, rows, 0, 10), Error);  // the 12-token row does not fit
}

}  // namespace
}  // namespace reglage::model
