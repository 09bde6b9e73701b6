// The learned reward source: a reward_model stage's output (adapter or model directory + reward head +
// lineage), scoring BOS + prompt + response + EOS at the last token, as the stage trained it.
#pragma once
#include <memory>
#include <string>

#include "framework/io/lineage.h"
#include "framework/model/llama.h"
#include "reward/reward_source.h"

namespace reglage::reward {

// The adapter a model reward adds to a shared base (make_model_source_on). Each `type: model` part of a
// `sum` gets its own, kRewardAdapter + "-" + its part index ("reward-0", nested: "reward-1-0"), so two parts
// on one base never collide.
constexpr const char* kRewardAdapter = "reward";

// `final_dir`: run_dir/<stage>/final of a reward_model stage. Throws naming the directory and the missing
// part. batch_size: sequences per forward pass.
// base_model: used when final_dir records no lineage (a directory from elsewhere); "" = required in the dir.
std::unique_ptr<RewardSource> make_model_source(const std::string& final_dir, int64_t batch_size = 32,
                                                const std::string& base_model = "");

// The same, sharing `shared` (a model whose weights are `shared_lineage`) when the reward model was trained
// on that same lineage: its LoRA adapter is added to `shared` as adapter `adapter` (frozen) and scoring
// switches to it, so no second copy of the base is loaded. Otherwise (another lineage, or a fully trained
// reward model) it loads its own model as make_model_source does. *shared_used (when given) tells which.
std::unique_ptr<RewardSource> make_model_source_on(const std::string& final_dir, int64_t batch_size,
                                                   model::CausalLM shared, const io::Lineage& shared_lineage,
                                                   bool* shared_used = nullptr,
                                                   const std::string& adapter = kRewardAdapter);

}  // namespace reglage::reward
