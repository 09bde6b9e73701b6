// The RL rollout's old log-probs come from the sampler itself (trainers/ppo_rollout.h): they must equal what
// a forward pass over the finished rollout gives, for the active adapter, at the rollout's temperature, with
// top-p filtering on (the policy's own probability, before filtering), and for prompts of different lengths
// in one batch (left padding during generation, right padding in the rollout).
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "test_util.h"
#include "trainers/ppo_rollout.h"
#include "trainers/shared_prefix.h"

namespace reglage {
namespace {

// stories260K with a LoRA adapter "actor" whose B is random (seeded), so the adapter changes the policy, and
// the given prompts encoded with its tokenizer.
struct ActorSetup {
  model::CausalLM m;
  std::unique_ptr<tokenizer::Tokenizer> tok;
  data::PromptDataset prompts;
};
ActorSetup actor_setup(uint64_t seed, const std::vector<std::string>& texts, torch::Dtype dtype = torch::kFloat32) {
  ActorSetup a{io::load_model(test::model_260k(), dtype), nullptr, {}};
  a.tok = io::load_model_tokenizer(test::model_260k(), test::tok_512(), a.m->config().vocab_size);
  lora::LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 8;
  lc.targets = {"all-linear"};
  lora::add_adapter(a.m, "actor", lc, 1);
  torch::NoGradGuard no_grad;
  torch::manual_seed(seed);
  for (auto& [path, layer] : a.m->linear_layers()) layer->adapter("actor").B.normal_(0.0, 0.05);
  for (const auto& text : texts) a.prompts.rows.push_back({text, a.tok->encode(text, a.tok->add_bos(), false), "", 1});
  return a;
}

TEST(RolloutLogprobs, SamplerLogprobsEqualAForwardPassOverTheRollout) {
  auto setup = actor_setup(5, {"Once upon a time", "The cat sat on the big red", "Tom"});
  auto& m = setup.m;
  auto& tok = setup.tok;
  auto& prompts = setup.prompts;
  for (const double temperature : {1.0, 0.7}) {
    trainers::RolloutSpec spec;
    spec.actor = {"actor"};
    spec.max_new_tokens = 24;
    spec.temperature = temperature;
    spec.top_p = 0.9;
    spec.seed = 11;
    auto ro = trainers::sample_rollout(m, prompts, {0, 1, 2, 1}, spec, *tok);
    ASSERT_TRUE(ro.old_logp.defined());
    const auto sampled = ro.old_logp.clone();                            // (n, R)
    trainers::Rollout recomputed = ro;
    recomputed.old_logp = torch::Tensor();
    trainers::evaluate_logprobs(m, recomputed, spec);                    // the forward pass over the rollout
    EXPECT_LT(test::max_abs_diff(sampled, recomputed.old_logp), 1e-4) << "temperature " << temperature;
    EXPECT_GT(ro.mask.sum().item<double>(), 40.0);                       // real responses were compared
    EXPECT_LT(sampled.max().item<double>(), 1e-6);                       // log-probs, 0 on padding
    EXPECT_GT(test::max_abs_diff(recomputed.old_logp, recomputed.ref_logp), 1e-3);  // the adapter matters
  }
}

// The passes over a rollout (no-grad log-probs, and the minibatch pass with gradients, rows in a shuffled
// order) must give what one pass over the whole right-padded batch through the full logits gives.
void check_passes_against_the_whole_batch(const std::vector<std::string>& texts, const std::vector<int64_t>& rows) {
  auto setup = actor_setup(3, texts);
  auto& m = setup.m;
  auto& tok = setup.tok;
  auto& prompts = setup.prompts;
  trainers::RolloutSpec spec;
  spec.actor = {"actor"};
  spec.max_new_tokens = 30;
  spec.seed = 4;
  auto ro = trainers::sample_rollout(m, prompts, rows, spec, *tok);
  const int64_t n = ro.ids.size(0), R = ro.index.size(1);

  // The whole batch at once, through the full logits: (n, L, V) -> (n, R).
  auto whole = [&](const model::AdapterSet& adapters) {
    auto logits = m->forward({ro.ids, {}, ro.valid, nullptr, adapters});  // (n, L, V)
    auto logp = torch::log_softmax(logits.to(torch::kFloat32), -1);
    auto at = logp.gather(1, ro.index.unsqueeze(-1).expand({n, R, logp.size(2)}));  // (n, R, V)
    return at.gather(2, ro.targets.unsqueeze(-1)).squeeze(-1) * ro.mask;           // (n, R)
  };
  // Chunks really are cut: the shortest rows' chunk is shorter than the batch.
  const auto chunks = trainers::length_chunks(ro, torch::arange(n), trainers::kPassChunkRows);
  ASSERT_EQ(chunks.size(), size_t((n + trainers::kPassChunkRows - 1) / trainers::kPassChunkRows));
  EXPECT_LT(chunks.front().ids.size(1), ro.ids.size(1));

  {  // no-grad reference pass
    torch::NoGradGuard no_grad;
    m->eval();
    auto expect_ref = whole({});
    trainers::Rollout r = ro;
    trainers::evaluate_logprobs(m, r, spec);
    EXPECT_LT(test::max_abs_diff(r.ref_logp, expect_ref), 1e-4);  // log-probs of size ~10: float rounding
  }
  // Minibatch pass with gradients, rows in a shuffled order.
  m->train();
  auto params = lora::set_trainable(m, lora::TrainMode::kLora, "actor");
  const auto idx = torch::randperm(n, torch::TensorOptions().dtype(torch::kLong).device(torch::kCPU))
                       .narrow(0, 0, 17);                                      // (b)
  const auto weights = torch::randn({17, R});                                 // (b, R)
  auto grads = [&](const torch::Tensor& loss) {
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    loss.backward();
    std::vector<torch::Tensor> g;
    for (auto& p : params) g.push_back(p.grad().clone());
    return g;
  };
  auto expect = whole(spec.actor).index_select(0, idx);  // (b, R)
  const auto expect_grads = grads((expect * weights).sum());
  auto got = trainers::forward_policy(m, ro, idx, spec);
  EXPECT_LT(test::max_abs_diff(got.logp, expect.detach()), 1e-4);
  {  // entropies of the same positions from the full logits
    torch::NoGradGuard no_grad;
    auto logp = torch::log_softmax(m->forward({ro.ids, {}, ro.valid, nullptr, spec.actor}).to(torch::kFloat32), -1);
    auto entropy = -(logp.exp() * logp).sum(-1).gather(1, ro.index) * ro.mask;  // (n, R)
    EXPECT_LT(test::max_abs_diff(got.entropy, entropy.index_select(0, idx)), 1e-4);
    EXPECT_GT(got.entropy.sum().item<double>(), 1.0);
  }
  const auto got_grads = grads((got.logp * weights).sum());
  ASSERT_EQ(got_grads.size(), expect_grads.size());
  double worst = 0, largest = 0;
  for (size_t i = 0; i < got_grads.size(); ++i) {
    worst = std::max(worst, test::max_abs_diff(got_grads[i], expect_grads[i]));
    largest = std::max(largest, expect_grads[i].abs().max().item<double>());
  }
  EXPECT_GT(largest, 1e-3);          // the gradient is real ...
  EXPECT_LT(worst, 1e-5 * largest);  // ... and the same
}

TEST(RolloutPasses, LengthSortedCutChunksGiveTheWholeBatchsResultsAndGradients) {
  // Every row its own prompt: the passes run in chunks of rows sorted by length, each cut to its longest row
  // (trainers/ppo_rollout.h, kPassChunkRows), and must return results in the caller's row order.
  const std::vector<std::string> starts = {"Once upon a time", "The cat sat on the big red", "Tom",
                                           "Lily and her mom went to", "One day, a little bird"};
  const std::vector<std::string> ends = {"", " and", " with the", " when a big", " so"};
  std::vector<std::string> texts;
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < 21; ++i) texts.push_back(starts[size_t(i % 5)] + ends[size_t(i / 5)]), rows.push_back(i);
  check_passes_against_the_whole_batch(texts, rows);
}

TEST(RolloutPasses, SharedPromptChunksGiveTheWholeBatchsResultsAndGradients) {
  // Rows repeating 5 prompts: the passes run each prompt once on a shared cache (trainers/shared_prefix.h)
  // and the rows' gradients meet in the shared prompt states.
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < 21; ++i) rows.push_back(i % 5);
  check_passes_against_the_whole_batch({"Once upon a time", "The cat sat on the big red", "Tom",
                                        "Lily and her mom went to", "One day, a little bird"},
                                       rows);
}

TEST(RolloutPasses, SharedPromptsRunOnceAndGiveTheRowByRowLogprobs) {
  // GRPO's rows repeat each prompt: the no-grad passes run each distinct prompt once into a cache that its
  // rows share (trainers/shared_prefix.h). Prompts of different lengths, responses of different lengths
  // (stopped ones included), groups of unequal size, more rows than one chunk holds, in the caller's order.
  const std::vector<std::string> texts = {"Once upon a time", "The cat sat on the big red", "Tom",
                                          "Lily and her mom went to", "One day, a little bird"};
  auto sampler = actor_setup(9, texts);
  trainers::RolloutSpec spec;
  spec.actor = {"actor"};
  spec.max_new_tokens = 28;
  spec.temperature = 0.8;
  spec.seed = 6;
  spec.eos_id = sampler.tok->eos_id();
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < 23; ++i) rows.push_back((i * 3) % 5 == 4 ? 2 : (i * 3) % 5);  // prompt 4 never
  auto ro = trainers::sample_rollout(sampler.m, sampler.prompts, rows, spec, *sampler.tok);
  const int64_t n = ro.ids.size(0), R = ro.index.size(1);
  for (int64_t b = 0; b < n; ++b) {  // responses that stopped early, as a stop token ends them
    const int64_t keep = std::min<int64_t>(R, 28 - (b * 5) % 17), P = ro.index[b][0].item<int64_t>() + 1;
    ro.mask[b].narrow(0, keep, R - keep).zero_();
    ro.targets[b].narrow(0, keep, R - keep).fill_(spec.pad_id);
    ro.valid[b].narrow(0, P + keep, ro.ids.size(1) - P - keep).fill_(false);
    ro.ids[b].narrow(0, P + keep, ro.ids.size(1) - P - keep).fill_(spec.pad_id);
  }
  const auto lengths = ro.mask.sum(1);
  ASSERT_LT(lengths.min().item<double>(), lengths.max().item<double>());  // responses of different lengths
  for (auto dtype : {torch::kFloat64, torch::kFloat32}) {
    auto setup = actor_setup(9, texts, dtype);  // the rollout's tokens scored by a model of this dtype
    auto& m = setup.m;
    torch::NoGradGuard no_grad;
    m->eval();
    for (const model::AdapterSet& adapters : {model::AdapterSet{}, spec.actor}) {
      // Row by row over the right-padded rollout, every slot computed.
      m->pack_padding = false;
      auto at = torch::full(ro.ids.sizes(), -100, torch::kLong)
                    .scatter_(1, ro.index, torch::where(ro.mask > 0, ro.targets, torch::full_like(ro.targets, -100)));
      auto expect = m->token_logprobs({ro.ids, {}, ro.valid, nullptr, adapters}, at, spec.temperature)
                        .gather(1, ro.index).to(torch::kFloat32) * ro.mask;  // (n, R)
      m->pack_padding = true;
      auto got = trainers::shared_prefix_logprobs(m, ro, adapters, spec.temperature);
      ASSERT_TRUE(got.defined());
      ASSERT_EQ(got.sizes(), (std::vector<int64_t>{n, R}));
      // float32 results either way; in float32 a few ulp of the largest log-prob (about 13 here), since the
      // two passes sum attention and the vocabulary in different orders.
      const double tol = dtype == torch::kFloat64 ? 1e-6 : 2e-6 * (1.0 + expect.abs().max().item<double>());
      EXPECT_LT(test::max_abs_diff(got, expect), tol) << (adapters.empty() ? "reference" : "actor");
      EXPECT_EQ(got.masked_select(ro.mask == 0).abs().max().item<double>(), 0.0);
      EXPECT_LT(got.masked_select(ro.mask > 0).max().item<double>(), 0.0);
    }
    // Every prompt once: nothing to share, the row-by-row pass runs.
  }
  auto distinct = trainers::sample_rollout(sampler.m, sampler.prompts, {0, 1, 2}, spec, *sampler.tok);
  EXPECT_FALSE(trainers::shared_prefix_logprobs(sampler.m, distinct, {}, 1.0).defined());
}

}  // namespace
}  // namespace reglage
