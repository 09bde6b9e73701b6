// The RL rollout's old log-probs come from the sampler itself (trainers/ppo_rollout.h): they must equal what
// a forward pass over the finished rollout gives, for the active adapter, at the rollout's temperature, with
// top-p filtering on (the policy's own probability, before filtering), and for prompts of different lengths
// in one batch (left padding during generation, right padding in the rollout).
#include <gtest/gtest.h>

#include "framework/io/model_io.h"
#include "framework/lora/adapter.h"
#include "test_util.h"
#include "trainers/ppo_rollout.h"

namespace reglage {
namespace {

TEST(RolloutLogprobs, SamplerLogprobsEqualAForwardPassOverTheRollout) {
  auto m = io::load_model(test::model_260k());
  auto tok = io::load_model_tokenizer(test::model_260k(), test::tok_512(), m->config().vocab_size);
  lora::LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 8;
  lc.targets = {"all-linear"};
  lora::add_adapter(m, "actor", lc, 1);
  {
    torch::NoGradGuard no_grad;
    torch::manual_seed(5);
    for (auto& [path, layer] : m->linear_layers()) layer->adapter("actor").B.normal_(0.0, 0.05);
  }
  data::PromptDataset prompts;
  for (const std::string text : {"Once upon a time", "The cat sat on the big red", "Tom"})
    prompts.rows.push_back({text, tok->encode(text, tok->add_bos(), false), "", 1});
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

}  // namespace
}  // namespace reglage
